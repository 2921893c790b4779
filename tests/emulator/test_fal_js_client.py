"""fal's official JS client, @fal-ai/client, cannot tell the emulator from fal.

The client is installed from the npm registry into ``.cache/js-client`` (ignored by git;
``.ci/run`` installs it first, and this test does if it is missing). The test is skipped,
with its reason, only when node or npm are missing. ``js/fal_client_check.mjs`` drives the
client (see its header for how its fixed hosts are pointed at the emulator) and prints
what it saw; the assertions are here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import KEY

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / ".cache" / "js-client"
CLIENT_VERSION = "1.10.1"
SCRIPT = Path(__file__).parent / "js" / "fal_client_check.mjs"


def installed_client() -> Path:
    """The directory holding node_modules/@fal-ai/client, installing it when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run fal's JS client")
    package = CLIENT_DIR / "node_modules" / "@fal-ai" / "client" / "package.json"
    if not package.exists() or json.loads(package.read_text())["version"] != CLIENT_VERSION:
        CLIENT_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--no-save",
                "--prefix",
                str(CLIENT_DIR),
                f"@fal-ai/client@{CLIENT_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return CLIENT_DIR


def test_js_client_against_the_emulator(make_api: Any) -> None:
    """submit, status, stream, result, subscribe, cancel, 422, unknown app, and small and
    multipart uploads that reach the storage origin the emulator's answers name."""
    client_dir = installed_client()
    api = make_api(max_running=1, job_seconds=(0.3, 0.3))
    done = subprocess.run(
        ["node", str(SCRIPT), str(client_dir), api.url, KEY],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    assert seen["firstStatus"] in ("IN_QUEUE", "IN_PROGRESS")
    assert seen["streamed"][-1] == "COMPLETED" and seen["streamDone"] == "COMPLETED"
    assert seen["resultRequestId"] == seen["requestId"]
    assert seen["videoUrl"].startswith(f"{api.storage}/files/")
    assert seen["subscribedVideo"].startswith(f"{api.storage}/files/")
    assert seen["cancelled"] == "COMPLETED"
    assert seen["validation"] == ["body", "prompt"]
    assert seen["unknownApp"] == 404
    assert seen["smallUrl"].startswith(f"{api.storage}/files/")
    assert api.plain.get(seen["smallUrl"]).content == bytes([1, 2, 3, 4])
    big = api.plain.get(seen["bigUrl"])
    assert len(big.content) == seen["bigSize"] == 91 * 1024 * 1024
    expected = bytearray(seen["bigSize"])
    for offset in range(0, len(expected), 4096):
        expected[offset] = (offset // 4096) % 251
    assert hashlib.sha256(big.content).digest() == hashlib.sha256(expected).digest()
    by_id = {r["request_id"]: r for r in api.stats()["requests"]}
    cancelled = [r for r in by_id.values() if r["cancelled"]]
    assert len(cancelled) == 1 and cancelled[0]["billable_units"] == 0
