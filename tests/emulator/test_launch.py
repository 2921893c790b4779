"""``run --local``'s emulator: its own session, no orphan, and state that survives a restart.

These start real emulator processes through ``launch.local_emulator`` (the test process or
a small helper process is the parent) and talk to them over loopback HTTP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.emulator._persist import read_origins, write_origins
from runner.emulator.launch import local_emulator

KEY = "launch-test-key"
T2V = "luma/agent/ray/v3.2/text-to-video"
ROOT = Path(__file__).resolve().parents[2]


def client(url: str) -> httpx.Client:
    """A keyed client for the emulator's queue origin."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Key {KEY}"}, timeout=10)


def stats(url: str) -> dict[str, Any]:
    """The emulator's counters."""
    answer: dict[str, Any] = httpx.get(f"{url}/_emulator/stats", timeout=10).json()
    return answer


def wait_for(http: httpx.Client, handle: dict[str, Any], state: str, timeout: float = 20) -> Any:
    """Poll a request until it reports ``state``."""
    deadline = time.monotonic() + timeout
    while (body := http.get(handle["status_url"]).json())["status"] != state:
        assert time.monotonic() < deadline, f"still {body['status']}"
        time.sleep(0.05)
    return body


def gone(pid: int, timeout: float = 20) -> bool:
    """Whether process ``pid`` has exited (or becomes a zombie) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ")[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_state_survives_a_restart_on_the_same_origins(tmp_path: Path) -> None:
    """Stopped and started again with its state dir, the emulator serves the same URLs, the
    finished request's result and files, the uploaded file and the old CDN token; a request
    that was running when it stopped runs on to COMPLETED."""
    state = tmp_path / ".emulator"
    with local_emulator("--job-seconds", "0.2:0.2", state_dir=state) as url:
        first_stats = stats(url)
        with client(url) as http:
            token = http.post("/storage/auth/token", json={}).json()
            storage = token["base_url"]
            cdn = {"Authorization": f"Bearer {token['token']}"}
            uploaded = httpx.post(f"{storage}/files/upload", content=b"source", headers=cdn)
            source_url = uploaded.json()["access_url"]
            created = httpx.post(f"{storage}/files/upload/multipart", headers=cdn).json()
            parts_base = f"{created['access_url']}/multipart/{created['uploadId']}"
            # Over the 32 MiB spool threshold: kept as its parts on disk, restored as such.
            pieces = (b"p" * (33 * 1024 * 1024), b"tail")
            parts = [
                httpx.put(f"{parts_base}/{n}", content=piece, headers=cdn).json()
                for n, piece in enumerate(pieces, 1)
            ]
            assert httpx.post(f"{parts_base}/complete", json={"parts": parts}, headers=cdn)
            done = http.post(f"/{T2V}", json={"prompt": "finished"}).json()
            wait_for(http, done, "COMPLETED")
            output = http.get(done["response_url"]).json()["video"]["url"]
            video = httpx.get(output).content
            http.post("/_emulator/faults", json={"spec": ""})
    origins = read_origins(state)
    assert origins == {"queue": url, "storage": storage}
    with local_emulator("--job-seconds", "1.5:1.5", state_dir=state) as again:
        assert again == url and stats(again)["pid"] != first_stats["pid"]
        with client(url) as http:
            assert http.get(done["status_url"]).json()["status"] == "COMPLETED"
            assert http.get(done["response_url"]).json()["video"]["url"] == output
            assert httpx.get(output).content == video
            assert httpx.get(source_url).content == b"source"
            assert httpx.get(created["access_url"]).content == b"".join(pieces)
            assert httpx.post(f"{storage}/files/upload", content=b"x", headers=cdn).is_success
            running = http.post(f"/{T2V}", json={"prompt": "interrupted"}).json()
            wait_for(http, running, "IN_PROGRESS")
    with local_emulator("--job-seconds", "1.5:1.5", state_dir=state) as third:
        assert third == url
        with client(url) as http:
            wait_for(http, running, "COMPLETED")
            finished = http.get(running["status_url"], params={"logs": "1"}).json()
            assert "error_type" not in finished
            assert any("restarted" in line["message"] for line in finished["logs"])
            assert http.get(running["response_url"]).status_code == 200
        assert stats(third)["submits"] == 2


def test_a_taken_port_is_reported_and_replaced(tmp_path: Path) -> None:
    """If the recorded queue port is taken, the emulator serves elsewhere and says so."""
    state = tmp_path / ".emulator"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        taken = f"http://127.0.0.1:{squatter.getsockname()[1]}"
        write_origins(state, {"queue": taken, "storage": "http://127.0.0.1:1"})
        notes: list[str] = []
        with local_emulator(state_dir=state, notify=notes.append) as url:
            assert url != taken and stats(url)["submits"] == 0
    assert len(notes) == 1 and taken in notes[0] and url in notes[0]
    assert "in use" in (state / "emulator.log").read_text()


HELPER = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from runner.emulator.launch import local_emulator

    # Like the runner on Ctrl-C: note it and carry on draining.
    signal.signal(signal.SIGINT, lambda *_: print("SIGINT", flush=True))
    with local_emulator(state_dir=Path(sys.argv[1])) as url:
        print(url, flush=True)
        while True:
            time.sleep(0.1)
    """
)


def test_ctrl_c_misses_the_emulator_and_kill_9_leaves_no_orphan(tmp_path: Path) -> None:
    """The emulator has its own process group: a SIGINT to the runner's group leaves it
    serving. When the runner is killed with SIGKILL, the emulator exits by itself (stdin's
    EOF), having kept its state."""
    state = tmp_path / ".emulator"
    runner = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a stand-in for the terminal's foreground group
    )
    try:
        assert runner.stdout is not None
        url = runner.stdout.readline().strip()
        pid = stats(url)["pid"]
        assert os.getpgid(pid) == pid != os.getpgid(runner.pid)  # its own group (session)
        with client(url) as http:
            handle = http.post(f"/{T2V}", json={"prompt": "kept"}).json()
        os.killpg(os.getpgid(runner.pid), signal.SIGINT)  # what Ctrl-C does
        assert runner.stdout.readline().strip() == "SIGINT"
        assert stats(url)["submits"] == 1  # the emulator did not get it
        runner.kill()
        runner.wait()
        assert gone(pid), "the emulator outlived its parent"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if runner.stdout is not None:
            runner.stdout.close()
    with local_emulator(state_dir=state) as again, client(again) as http:
        assert again == url
        assert http.get(handle["status_url"]).status_code in (200, 202)


def test_the_emulator_exits_when_stdin_closes() -> None:
    """``--exit-with-stdin``: EOF on stdin is a clean shutdown (exit status 0)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "runner.emulator", "--port", "0", "--exit-with-stdin"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    lines = [child.stdout.readline().strip() for _ in range(2)]
    assert lines[0].startswith("listening on http://127.0.0.1:")
    assert lines[1].startswith("storage on http://127.0.0.1:") and lines[1][11:] != lines[0][13:]
    child.stdin.close()
    assert child.wait(timeout=20) == 0
    child.stdout.close()


def _binds(host: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("extra", [[], ["--backup-host", "127.0.0.2"]])
def test_cli_prints_every_origin(extra: list[str]) -> None:
    """The CLI prints the queue origin first, then storage (and the backup host if asked)."""
    if extra and not _binds("127.0.0.2"):
        pytest.skip("127.0.0.2 does not bind here")
    child = subprocess.Popen(
        [sys.executable, "-m", "runner.emulator", "--exit-with-stdin", *extra],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    lines = [child.stdout.readline().strip() for _ in range(3 if extra else 2)]
    child.stdin.close()
    child.wait(timeout=20)
    child.stdout.close()
    queue = lines[0].removeprefix("listening on ")
    named = dict(line.split(" on ") for line in lines[1:])
    assert named["storage"].startswith("http://127.0.0.1:") and named["storage"] != queue
    if extra:
        assert named["backup"] == queue.replace("127.0.0.1", "127.0.0.2")
