"""Downloads against a real loopback HTTP server, plus the path-safety rules.

The server is a tiny starlette app served by uvicorn in a thread (a test fixture, not
the emulator): each route triggers one behaviour a CDN can show.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from runner import outputs as dl
from runner.errors import DiskError, DownloadError, UnsafeOutput
from runner.outputs import (
    _atomic,
    _download,
    check_relative,
    output_name_for,
    relative_to_root,
    safe_extension,
)

pytestmark = pytest.mark.anyio

DATA = os.urandom(3 * 1024 * 1024 + 12345)
SHA = hashlib.sha256(DATA).hexdigest()
ETAG = '"v1"'
SEEN: list[dict[str, str]] = []  # headers of every request, newest last
_FLAKY: set[str] = set()


def _ranged(request: Request) -> Response:
    """Serve DATA honouring Range and If-Range, like a CDN."""
    wanted, if_range = request.headers.get("range"), request.headers.get("if-range")
    if wanted and if_range in (None, ETAG):
        start = int(wanted.removeprefix("bytes=").rstrip("-"))
        if start >= len(DATA):
            return Response(status_code=416, headers={"content-range": f"bytes */{len(DATA)}"})
        headers = {"content-range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}", "etag": ETAG}
        return Response(DATA[start:], status_code=206, headers=headers)
    return Response(DATA, headers={"etag": ETAG})


async def file_route(request: Request) -> Response:
    """The whole file, with Range support and a strong ETag."""
    return _ranged(request)


async def norange_route(request: Request) -> Response:
    """The whole file, always (a server without Range support)."""
    return Response(DATA)  # ignores Range, no validator


async def corrupt_route(request: Request) -> Response:
    """The file with one bit flipped."""
    return Response(DATA[:100] + bytes([DATA[100] ^ 1]) + DATA[101:])


async def redirect_route(request: Request) -> Response:
    """A 302 to /file, to ftp://, or to itself."""
    targets = {
        "ok": "/file",
        "ftp": "ftp://example.invalid/x",
        "file": "file:///etc/passwd",
        "data": "data:video/mp4;base64,AAAA",
        "gopher": "gopher://127.0.0.1/x",
        "loop": "/redirect/loop",
    }
    return RedirectResponse(targets[request.path_params["kind"]], status_code=302)


async def missing_route(request: Request) -> Response:
    """A 404."""
    return Response(b"gone", status_code=404)


class Truncating:
    """Announces the full length, sends half, then drops the connection.

    Under ``/flaky/<id>`` only the first request is cut; later ones are served whole.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        token = scope["path"]
        if token.startswith("/flaky/") and token in _FLAKY:
            response = _ranged(request)
            await response(scope, receive, send)
            return
        _FLAKY.add(token)
        headers = [(b"content-length", str(len(DATA)).encode()), (b"etag", ETAG.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": DATA[: len(DATA) // 2], "more_body": True}
        )
        raise ConnectionAbortedError("cut")  # uvicorn closes the connection mid-body


app = Starlette(
    routes=[
        Route("/file", file_route),
        Route("/norange", norange_route),
        Route("/corrupt", corrupt_route),
        Route("/redirect/{kind}", redirect_route),
        Route("/missing", missing_route),
        Route("/truncated", Truncating()),
        Route("/flaky/{token}", Truncating()),
    ]
)


async def recording_app(scope: Any, receive: Any, send: Any) -> None:
    """The app, noting each request's headers in SEEN first."""
    if scope["type"] == "http":
        SEEN.append({k.decode(): v.decode() for k, v in scope["headers"]})
    await app(scope, receive, send)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The app on 127.0.0.1 at a free port, in a daemon thread."""
    config = uvicorn.Config(
        recording_app, host="127.0.0.1", port=0, log_level="critical", lifespan="off"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    port = instance.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(5)


@pytest.fixture
def anyio_backend() -> str:
    """Run on asyncio only (what the CLI uses)."""
    return "asyncio"


@pytest.fixture
async def client() -> Any:
    """A plain httpx client, as the scheduler's downloader is."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty output directory inside a scratch directory."""
    path = tmp_path / "outputs"
    path.mkdir()
    return path


def leftovers(root: Path) -> list[str]:
    """Every file left under ``root``, relative."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- the happy path and verification -------------------------------------------------------


async def test_download_verified(server: str, client: httpx.AsyncClient, root: Path) -> None:
    """A normal download lands under its final name with size and sha256, nothing else left."""
    progress: list[int] = []
    got = await dl.download(
        client,
        f"{server}/file",
        root / "a" / "b" / "clip.mp4",
        root=root,
        expected_size=len(DATA),
        expected_sha256=SHA,
        on_bytes=progress.append,
    )
    assert got == dl.Downloaded(root / "a" / "b" / "clip.mp4", len(DATA), SHA)
    assert got.path.read_bytes() == DATA
    assert sum(progress) == len(DATA)
    assert leftovers(root) == ["a/b/clip.mp4"]
    assert SEEN[-1]["accept-encoding"] == "identity"


async def test_truncated_body_keeps_part(
    server: str, client: httpx.AsyncClient, root: Path
) -> None:
    """A body shorter than Content-Length is DownloadError; the .part stays, no final file."""
    with pytest.raises(DownloadError, match=rf"truncated: got \d+ of {len(DATA)} bytes"):
        await dl.download(client, f"{server}/truncated", root / "t.mp4", root=root)
    assert not (root / "t.mp4").exists()
    assert (root / "t.mp4.part").stat().st_size == len(DATA) // 2


async def test_truncated_then_resumed(server: str, client: httpx.AsyncClient, root: Path) -> None:
    """The next attempt asks for the rest with Range + If-Range and appends the 206."""
    url = f"{server}/flaky/{uuid.uuid4().hex}"
    with pytest.raises(DownloadError):
        await dl.download(client, url, root / "r.mp4", root=root)
    progress: list[int] = []
    got = await dl.download(
        client, url, root / "r.mp4", root=root, expected_sha256=SHA, on_bytes=progress.append
    )
    assert SEEN[-1]["range"] == f"bytes={len(DATA) // 2}-"
    assert SEEN[-1]["if-range"] == ETAG
    assert got.sha256 == SHA and got.size == len(DATA)
    assert sum(progress) == len(DATA) - len(DATA) // 2
    assert leftovers(root) == ["r.mp4"]


def plant_part(root: Path, name: str, data: bytes, url: str, etag: str | None) -> None:
    """Leave a ``.part`` and its label as an earlier attempt would have."""
    (root / f"{name}.part").write_bytes(data)
    (root / f"{name}.part.json").write_text(json.dumps({"url": url, "etag": etag}))


async def test_server_ignoring_range_restarts(
    server: str, client: httpx.AsyncClient, root: Path
) -> None:
    """A 200 to a Range request restarts from zero (the old part is overwritten)."""
    url = f"{server}/norange"
    plant_part(root, "n.mp4", b"X" * 1000, url, None)
    got = await dl.download(client, url, root / "n.mp4", root=root, expected_sha256=SHA)
    assert SEEN[-1]["range"] == "bytes=1000-"
    assert "if-range" not in SEEN[-1]
    assert got.path.read_bytes() == DATA


async def test_changed_etag_restarts(server: str, client: httpx.AsyncClient, root: Path) -> None:
    """If-Range with a stale ETag gets the whole file, so stale bytes are never spliced in."""
    url = f"{server}/file"
    plant_part(root, "e.mp4", b"Y" * 1000, url, '"old"')
    got = await dl.download(client, url, root / "e.mp4", root=root)
    assert SEEN[-1]["if-range"] == '"old"'
    assert got.sha256 == SHA


async def test_part_from_other_url_not_resumed(
    server: str, client: httpx.AsyncClient, root: Path
) -> None:
    """A part labelled with another URL (an earlier attempt's output) is not continued."""
    plant_part(root, "o.mp4", DATA[:1000], f"{server}/elsewhere", ETAG)
    got = await dl.download(client, f"{server}/file", root / "o.mp4", root=root)
    assert "range" not in SEEN[-1]
    assert got.sha256 == SHA


async def test_unsatisfiable_range_starts_over(
    server: str, client: httpx.AsyncClient, root: Path
) -> None:
    """A 416 (the part is already as long as the file) discards the part; the retry succeeds."""
    url = f"{server}/file"
    plant_part(root, "u.mp4", DATA, url, ETAG)
    with pytest.raises(DownloadError, match="416"):
        await dl.download(client, url, root / "u.mp4", root=root)
    assert leftovers(root) == []
    assert (await dl.download(client, url, root / "u.mp4", root=root)).sha256 == SHA


async def test_corrupt_bytes_rejected(server: str, client: httpx.AsyncClient, root: Path) -> None:
    """A sha256 mismatch is DownloadError; the bad part is deleted so it is never resumed."""
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        await dl.download(
            client, f"{server}/corrupt", root / "c.mp4", root=root, expected_sha256=SHA
        )
    assert leftovers(root) == []


async def test_size_mismatch_rejected(server: str, client: httpx.AsyncClient, root: Path) -> None:
    """A server offering another size than fal announced is refused before writing."""
    with pytest.raises(DownloadError, match="expected 5"):
        await dl.download(client, f"{server}/file", root / "s.mp4", root=root, expected_size=5)
    assert leftovers(root) == []


async def test_http_404_is_download_error(
    server: str, client: httpx.AsyncClient, root: Path
) -> None:
    """A 404 is DownloadError (retryable: the scheduler's attempt cap ends a permanent one)."""
    with pytest.raises(DownloadError, match="HTTP 404"):
        await dl.download(client, f"{server}/missing", root / "m.mp4", root=root)
    assert leftovers(root) == []


# -- redirects and schemes -----------------------------------------------------------------


async def test_redirect_followed(server: str, client: httpx.AsyncClient, root: Path) -> None:
    """An http redirect is followed (by us, with the scheme checked)."""
    got = await dl.download(client, f"{server}/redirect/ok", root / "x.mp4", root=root)
    assert got.sha256 == SHA


@pytest.mark.parametrize("scheme", ["ftp", "file", "data", "gopher"])
async def test_redirect_to_other_scheme_refused(
    scheme: str, server: str, client: httpx.AsyncClient, root: Path
) -> None:
    """A redirect to ftp, file, data or gopher is UnsafeOutput and nothing is written."""
    with pytest.raises(UnsafeOutput, match="redirect"):
        await dl.download(client, f"{server}/redirect/{scheme}", root / "x.mp4", root=root)
    assert leftovers(root) == []


async def test_redirect_loop_capped(server: str, client: httpx.AsyncClient, root: Path) -> None:
    """More than five redirects is DownloadError."""
    with pytest.raises(DownloadError, match="redirects"):
        await dl.download(client, f"{server}/redirect/loop", root / "x.mp4", root=root)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.invalid/x",
        "file:///etc/passwd",
        "data:video/mp4;base64,AAAA",
        "gopher://127.0.0.1/x",
        "not a url",
        "/etc/passwd",
    ],
)
async def test_non_http_url_refused(url: str, client: httpx.AsyncClient, root: Path) -> None:
    """Only http and https output URLs are fetched."""
    with pytest.raises(UnsafeOutput):
        await dl.download(client, url, root / "x.mp4", root=root)
    assert leftovers(root) == []


# -- where bytes may go --------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    [
        "../../x",
        "a/../../x",
        "/tmp/x",
        "a\0b",
        "x" * 300,
        "d" * 300 + "/x",
        "x" * 250,
        "",
        ".",
    ],
    ids=[
        "dotdot",
        "inner-dotdot",
        "absolute",
        "nul",
        "long-name",
        "long-dir",
        "no-room",
        "empty",
        "dot",
    ],
)
async def test_escaping_paths_refused(
    relative: str, server: str, client: httpx.AsyncClient, root: Path
) -> None:
    """Paths that leave root, hold NUL, or have over-long components write nothing anywhere."""
    before = sorted(root.parent.rglob("*"))
    with pytest.raises(UnsafeOutput):
        check_relative(relative)
    with pytest.raises(UnsafeOutput):
        await dl.download(
            client, f"{server}/file", root / relative if relative else root, root=root
        )
    assert sorted(root.parent.rglob("*")) == before


async def test_symlink_at_dest_refused(
    server: str, client: httpx.AsyncClient, root: Path, tmp_path: Path
) -> None:
    """A symlink planted at the final name is refused; its target is untouched."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (root / "v.mp4").symlink_to(victim)
    with pytest.raises(UnsafeOutput):
        await dl.download(client, f"{server}/file", root / "v.mp4", root=root)
    assert victim.read_bytes() == b"keep"


async def test_symlink_parent_refused(
    server: str, client: httpx.AsyncClient, root: Path, tmp_path: Path
) -> None:
    """A symlinked directory below root is refused; nothing lands in its target."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafeOutput, match="symlink"):
        await dl.download(client, f"{server}/file", root / "sub" / "x.mp4", root=root)
    assert list(elsewhere.iterdir()) == []


async def test_symlink_part_refused(
    server: str, client: httpx.AsyncClient, root: Path, tmp_path: Path
) -> None:
    """A symlink planted as the .part file is not written through."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (root / "p.mp4.part").symlink_to(victim)
    with pytest.raises(UnsafeOutput):
        await dl.download(client, f"{server}/file", root / "p.mp4", root=root)
    assert victim.read_bytes() == b"keep"
    assert not (root / "p.mp4").exists()


# -- disk failures -------------------------------------------------------------------------


@pytest.mark.parametrize("one_read", [False, True], ids=["writer-thread", "one-read"])
async def test_enospc_while_writing(
    server: str,
    client: httpx.AsyncClient,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_read: bool,
) -> None:
    """ENOSPC mid-write is DiskError naming the path; the part stays, no final file —
    whether a writer thread writes the body or (a body of one read) the fetch itself."""
    real, calls, writers = _atomic.write_all, [], set()

    def full(fd: int, data: bytes) -> None:
        calls.append(len(data))
        writers.add(threading.current_thread().name)
        if len(calls) > 2:  # the label and one chunk get through, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(_atomic, "write_all", full)
    if one_read:
        monkeypatch.setattr(_download, "READ_BYTES", len(DATA))  # the whole body counts as one read
    with pytest.raises(DiskError, match=r"d\.mp4\.part.*ENOSPC"):
        await dl.download(client, f"{server}/file", root / "d.mp4", root=root)
    assert not (root / "d.mp4").exists()
    assert (root / "d.mp4.part").exists()
    assert ("raybatch download writer" in writers) is not one_read


async def test_eio_on_fsync(
    server: str, client: httpx.AsyncClient, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed fsync is DiskError (fatal, never retried) and the final name never appears."""

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(DiskError, match="EIO"):
        await dl.download(client, f"{server}/file", root / "f.mp4", root=root)
    assert not (root / "f.mp4").exists()
    assert (root / "f.mp4.part").exists()


# -- names ---------------------------------------------------------------------------------


def test_safe_paths_accepted(tmp_path: Path) -> None:
    """Ordinary relative output paths pass unchanged."""
    assert check_relative("renders/a b/clip.mp4") == PurePosixPath("renders/a b/clip.mp4")
    assert check_relative(PurePosixPath("x/./y.mp4")) == PurePosixPath("x/y.mp4")
    assert relative_to_root(tmp_path, tmp_path / "a" / ".." / "b") == PurePosixPath("b")


def test_relative_to_root_refuses_outside(tmp_path: Path) -> None:
    """Destinations outside root, or root itself, are refused."""
    for dest in (tmp_path.parent / "x", tmp_path, tmp_path / ".." / "x"):
        with pytest.raises(UnsafeOutput):
            relative_to_root(tmp_path, dest)


@pytest.mark.parametrize(
    ("file_name", "content_type", "ext"),
    [
        ("out.MP4", None, ".mp4"),
        ("../../evil.sh", None, ".sh"),
        ("a/b/frames.exr", "video/mp4", ".exr"),
        ("no-extension", "video/mp4", ".mp4"),
        (None, "image/x-exr", ".exr"),
        ("x.mp4\0.sh", None, ".sh"),
        ("weird.ex;t", None, ""),
        (None, None, ""),
    ],
)
def test_safe_extension(file_name: str | None, content_type: str | None, ext: str) -> None:
    """Only a short alphanumeric extension survives from remote names or content types."""
    assert safe_extension(file_name, content_type) == ext


def test_output_name_for_sanitises() -> None:
    """Remote labels and names cannot pick directories, hidden files or huge names."""
    assert output_name_for("frames.exr", stem="clip", label="exr_file") == "clip.exr_file.exr"
    assert output_name_for("x", stem="clip", label="../../etc/passwd") == "clip.etc-passwd"
    assert output_name_for(None, stem="clip", label="..", content_type="video/mp4") == (
        "clip.output.mp4"
    )
    long = output_name_for("a.mp4", stem="clip", label="l" * 1000)
    assert len(long.encode()) <= 245 and long.endswith(".mp4")
