"""Where each manifest's outputs went, so a run from another directory cannot pay twice.

The default output directory, ``outputs/<name>``, is relative to where raybatch runs. Run
the same manifest from elsewhere (a cron job, a new terminal) and there is no state file
there: every job would be submitted, and paid for, again. This small per-user index
(``$XDG_STATE_HOME/raybatch/runs.json``) remembers which output directories each manifest
used, so ``run`` can refuse and point at the earlier one instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ManifestError


def _index() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "raybatch" / "runs.json"


def _load() -> dict[str, list[str]]:
    try:
        data = json.loads(_index().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(manifest: Path, output_dir: Path) -> None:
    """Record that ``manifest`` wrote to ``output_dir`` (best effort: never fails a run)."""
    key = str(manifest.resolve())
    data = _load()
    dirs = [d for d in data.get(key, []) if d != str(output_dir)] + [str(output_dir)]
    data[key] = dirs[-10:]
    path = _index()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass


def output_dirs(manifest: Path) -> list[Path]:
    """The output directories ``manifest`` was run in that still hold a state file, the
    most recently used last."""
    dirs = _load().get(str(manifest.resolve()), [])
    return [Path(d) for d in dirs if (Path(d) / "state.db").exists()]


def check_default_output_dir(manifest: Path, output_dir: Path) -> None:
    """Refuse a default output directory with no state when this manifest has state
    elsewhere; the message says how to continue there or start afresh on purpose."""
    if (output_dir / "state.db").exists():
        return
    earlier = [d for d in output_dirs(manifest) if d != output_dir]
    if earlier:
        raise ManifestError(
            f"{manifest} was run before with its outputs in {earlier[-1]}, but the default"
            f" output directory from here is {output_dir}, which has no state: running here"
            f" would submit (and pay for) every job again. Continue with --output-dir"
            f" {earlier[-1]}, or pass --output-dir {output_dir} to start afresh on purpose"
        )
