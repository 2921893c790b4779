"""The bad-input corpus: every broken manifest or medium is refused before anything happens.

Each case is a manifest that ``raybatch run`` must refuse with exit 2 and a short message
``FILE:LINE: FIELD: what is wrong`` (no traceback), having submitted and uploaded nothing
(the emulator's counters stay at zero) and written nothing (the output directory is never
created, the corpus is left as it was).

Most cases are files in ``tests/bad_inputs/``; each begins with two comment lines, what it
is and what raybatch must say about it::

    # A resolution fal does not offer.
    # expect: 9 defaults.resolution '480p' is not one of 540p, 720p, 1080p

(``-`` for a line or field that does not apply: a YAML syntax error is about the document,
not a field, and a manifest that cannot be read at all has no line). Cases that cannot be
files in git are made at test time: non-UTF-8 and UTF-16 bytes, an empty file, a 100,000-line
manifest, FIFOs, dangling symlinks and symlink loops. The tests run as root here, where
``chmod 000`` does not stop a read; unreadable inputs are made with a FIFO (a read would
block forever), a directory, a dangling symlink and a symlink loop instead, and the
``chmod 000`` case runs only for an unprivileged user.

Cases run in-process through ``runner.cli.main`` (the same code path as the console
script, ~10 ms each) against one emulator for the module; a sample also runs as a real
subprocess, as a user runs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner import cli

from .conftest import TEST_KEY, Emulator, run_cli, start_emulator, stop_emulator

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
MEDIA = Path(__file__).resolve().parent.parent / "manifests" / "media"
V2V = "luma/agent/ray/v3.2/video-to-video"
# A message is short: the problems (at most 20 and a count) and nothing else.
MAX_MESSAGE_CHARS = 3000
_EXPECT = re.compile(r"^# expect: (\S+) (\S+) ?(.*)$")


@dataclass(frozen=True)
class Case:
    """One bad input: the manifest to run and what the message must say."""

    manifest: Path
    line: int | None
    field: str
    phrase: str


def _corpus_case(path: Path) -> Case:
    lines = path.read_bytes().split(b"\n", 2)
    found = _EXPECT.match(lines[1].decode())
    assert found is not None, f"{path.name}: line 2 must be '# expect: LINE FIELD PHRASE'"
    line, field, phrase = found.groups()
    return Case(
        path,
        None if line == "-" else int(line),
        "" if field == "-" else field,
        phrase,
    )


CORPUS_FILES = sorted(CORPUS.glob("*.yaml"))

# --------------------------------------------------------------------------- generated cases

HEAD = f"""name: bad
endpoint: {V2V}
prompts: {{noir: "film noir"}}
clips:
"""


def _with_clip(tmp: Path, clip: str) -> Path:
    path = tmp / "m.yaml"
    path.write_text(HEAD + f"  - {clip}\n")
    return path


def _huge_syntax_error(tmp: Path) -> Case:
    """100,000 prompt lines, then a line YAML cannot parse."""
    path = tmp / "huge.yaml"
    body = "".join(f'  p{i}: "prompt number {i}"\n' for i in range(99_996))
    path.write_text(f"name: bad\nendpoint: {V2V}\nprompts:\n{body}  broken: [\n")
    return Case(path, 100_000, "", "YAML syntax error")


def _huge_field_error(tmp: Path) -> Case:
    """100,000 prompt lines, then a misspelt key on the last line."""
    path = tmp / "huge.yaml"
    body = "".join(f'  p{i}: "prompt number {i}"\n' for i in range(99_996))
    path.write_text(f"name: bad\nendpoint: {V2V}\nprompts:\n{body}promts: {{}}\n")
    return Case(path, 100_000, "promts", "did you mean 'prompts'?")


def _latin1(tmp: Path) -> Case:
    """Latin-1 bytes (caf\\xe9) on line 3."""
    path = tmp / "latin1.yaml"
    path.write_bytes(b"name: bad\nendpoint: fal-ai/x\nprompts: {a: caf\xe9}\n")
    return Case(path, 3, "", "is not UTF-8 text (byte 0xe9")


def _utf16(tmp: Path) -> Case:
    """A manifest saved as UTF-16 (with its byte-order mark)."""
    path = tmp / "utf16.yaml"
    path.write_bytes("name: bad\nendpoint: fal-ai/x\n".encode("utf-16"))
    return Case(path, 1, "", "is UTF-16 text; save the manifest as UTF-8")


def _empty(tmp: Path) -> Case:
    """A zero-byte manifest."""
    path = tmp / "empty.yaml"
    path.write_bytes(b"")
    return Case(path, None, "", "the manifest is empty")


def _only_comments(tmp: Path) -> Case:
    """A manifest of comments and blank lines."""
    path = tmp / "comments.yaml"
    path.write_text("# to do\n\n# name: later\n")
    return Case(path, None, "", "the manifest is empty")


def _manifest_missing(tmp: Path) -> Case:
    """A manifest path that does not exist."""
    return Case(tmp / "nope.yaml", None, "", "cannot read the manifest: No such file")


def _manifest_directory(tmp: Path) -> Case:
    """A directory given as the manifest."""
    path = tmp / "dir.yaml"
    path.mkdir()
    return Case(path, None, "", "is a directory")


def _manifest_fifo(tmp: Path) -> Case:
    """A FIFO given as the manifest: reading it would block forever."""
    path = tmp / "fifo.yaml"
    os.mkfifo(path)
    return Case(path, None, "", "not a regular file")


def _manifest_dangling(tmp: Path) -> Case:
    """A manifest that is a symlink to nothing."""
    path = tmp / "link.yaml"
    path.symlink_to(tmp / "gone.yaml")
    return Case(path, None, "", "cannot read the manifest: No such file")


def _manifest_too_large(tmp: Path) -> Case:
    """A (sparse) 65 MB manifest, over the 64 MB cap: refused before it is read."""
    path = tmp / "big.yaml"
    with path.open("wb") as handle:
        handle.truncate(65 * 2**20)
    return Case(path, None, "", "a manifest may be at most")


def _clip_fifo(tmp: Path) -> Case:
    """A FIFO named as a clip: hashing it would block forever."""
    os.mkfifo(tmp / "pipe.mp4")
    return Case(_with_clip(tmp, "pipe.mp4"), 5, "clips[0].path", "not a regular file")


def _clip_dangling(tmp: Path) -> Case:
    """A clip that is a symlink to nothing."""
    (tmp / "link.mp4").symlink_to(tmp / "gone.mp4")
    return Case(_with_clip(tmp, "link.mp4"), 5, "clips[0].path", "no such file")


def _clip_loop(tmp: Path) -> Case:
    """A clip that is a symlink loop."""
    (tmp / "a.mp4").symlink_to(tmp / "b.mp4")
    (tmp / "b.mp4").symlink_to(tmp / "a.mp4")
    return Case(_with_clip(tmp, "a.mp4"), 5, "clips[0].path", "Too many levels of symbolic links")


def _clip_name_too_long(tmp: Path) -> Case:
    """A clip name longer than any file system allows."""
    return Case(_with_clip(tmp, "x" * 300 + ".mp4"), 5, "clips[0].path", "File name too long")


def _clip_unreadable(tmp: Path) -> Case:
    """A clip with mode 000 (only meaningful for an unprivileged user)."""
    clip = tmp / "secret.mp4"
    clip.write_bytes((MEDIA / "city.mp4").read_bytes())
    clip.chmod(0)
    return Case(_with_clip(tmp, "secret.mp4"), 5, "clips[0].path", "Permission denied")


def _glob_of_fifos(tmp: Path) -> Case:
    """A glob that matches only FIFOs and directories."""
    os.mkfifo(tmp / "a.mp4")
    (tmp / "b.mp4").mkdir()
    return Case(_with_clip(tmp, '"*.mp4"'), 5, "clips[0].path", "matches no file")


GENERATED: dict[str, Callable[[Path], Case]] = {
    "huge-100k-lines-syntax": _huge_syntax_error,
    "huge-100k-lines-typo": _huge_field_error,
    "encoding-latin1": _latin1,
    "encoding-utf16": _utf16,
    "empty-file": _empty,
    "only-comments": _only_comments,
    "manifest-missing": _manifest_missing,
    "manifest-directory": _manifest_directory,
    "manifest-fifo": _manifest_fifo,
    "manifest-dangling-symlink": _manifest_dangling,
    "manifest-too-large": _manifest_too_large,
    "clip-fifo": _clip_fifo,
    "clip-dangling-symlink": _clip_dangling,
    "clip-symlink-loop": _clip_loop,
    "clip-name-too-long": _clip_name_too_long,
    "clip-glob-of-non-files": _glob_of_fifos,
    "clip-chmod-000": _clip_unreadable,
}
_ROOT_READS_ANYTHING = {"clip-chmod-000"}

# --------------------------------------------------------------------------- checks


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One emulator for the module: every case must leave its counters at zero."""
    emu = start_emulator("--synthetic", "--job-seconds", "0.1:0.2")
    try:
        yield emu
    finally:
        stop_emulator(emu)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _untouched(emulator: Emulator) -> None:
    stats = emulator.stats()
    assert stats["submits"] == 0 and stats["uploads"] == 0, stats
    calls = {k: v for k, v in stats.items() if k.endswith("_calls") and v}
    assert not calls, f"the runner talked to fal: {calls}"


def check_refusal(case: Case, code: int, stdout: str, stderr: str, out: Path) -> None:
    """Exit 2, one short message at FILE:LINE: FIELD: naming the problem, nothing written."""
    assert "Traceback" not in stderr, stderr
    assert code == 2, f"exit {code}\n{stderr}"
    assert stdout == ""
    assert len(stderr) <= MAX_MESSAGE_CHARS, f"message of {len(stderr)} characters"
    assert stderr.startswith("raybatch: "), stderr
    where = f"{case.manifest}:{case.line}:" if case.line is not None else f"{case.manifest}:"
    where += f" {case.field}:" if case.field else ""
    lines = stderr.removeprefix("raybatch: ").splitlines()
    hits = [line for line in lines if line.startswith(where + " ") and case.phrase in line]
    assert hits, f"no line starts {where!r} and says {case.phrase!r}:\n{stderr}"
    assert not out.exists(), "the output directory was created"


def run_in_process(
    case: Case, tmp: Path, capsys: pytest.CaptureFixture[str], emulator: Emulator
) -> None:
    """``raybatch run`` through ``cli.main`` in this process, then every check."""
    out = tmp / "out"
    emulator.post("/_emulator/reset", {})  # a case that wrongly ran must not fail the next
    before = _tree(CORPUS)
    argv = ["run", str(case.manifest), "--fal-url", emulator.url, "--output-dir", str(out)]
    code = cli.main(argv)
    captured = capsys.readouterr()
    check_refusal(case, code, captured.out, captured.err, out)
    assert _tree(CORPUS) == before, "the corpus was written to"
    _untouched(emulator)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a scratch directory with a key, so a stray default path lands nowhere real."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAL_KEY", TEST_KEY)
    return tmp_path


# --------------------------------------------------------------------------- tests


def test_corpus_is_large_and_every_case_states_its_expectation() -> None:
    """The corpus holds at least 60 broken manifests, each saying what it must be told."""
    assert len(CORPUS_FILES) + len(GENERATED) >= 60
    for path in CORPUS_FILES:
        _corpus_case(path)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.stem for p in CORPUS_FILES])
def test_corpus_manifest_is_refused(
    path: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str], emulator: Emulator
) -> None:
    """A broken manifest from the corpus: exit 2, FILE:LINE: FIELD: message, nothing done."""
    run_in_process(_corpus_case(path), in_tmp, capsys, emulator)


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_input_is_refused(
    name: str, in_tmp: Path, capsys: pytest.CaptureFixture[str], emulator: Emulator
) -> None:
    """A broken input made at test time: exit 2, FILE:LINE: FIELD: message, nothing done."""
    if name in _ROOT_READS_ANYTHING and os.geteuid() == 0:
        pytest.skip("root reads a mode-000 file; FIFOs and dangling links cover unreadable")
    run_in_process(GENERATED[name](in_tmp), in_tmp, capsys, emulator)


SUBPROCESS_SAMPLE = [
    "yaml-tab-indent",
    "rule-reframe-1080p-vertical",
    "media-corrupt",
    "absurd-digits",
    "huge-100k-lines-typo",
    "encoding-latin1",
    "clip-fifo",
]


@pytest.mark.parametrize("name", SUBPROCESS_SAMPLE)
def test_real_cli_refuses_a_sample(name: str, tmp_path: Path, emulator: Emulator) -> None:
    """The console script itself (a child process) refuses a sample of the corpus the same way."""
    made = GENERATED.get(name)
    case = made(tmp_path) if made is not None else _corpus_case(CORPUS / f"{name}.yaml")
    out = tmp_path / "out"
    done = run_cli(
        "run", case.manifest, "--fal-url", emulator.url, "--output-dir", out, cwd=tmp_path
    )
    check_refusal(case, done.returncode, done.stdout, done.stderr, out)
    _untouched(emulator)


def test_plan_refuses_like_run(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``plan`` (and ``status``) refuse a broken manifest with the same message and exit 2."""
    case = _corpus_case(CORPUS / "enum-resolution.yaml")
    for command in ("plan", "status"):
        code = cli.main([command, str(case.manifest), "--output-dir", str(in_tmp / "out")])
        captured = capsys.readouterr()
        check_refusal(case, code, captured.out, captured.err, in_tmp / "out")
