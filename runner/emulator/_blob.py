"""A stored file's bytes (in memory, spooled to disk, or a multipart file's parts) and
their HTTP response: Content-Length, ETag, ``Repr-Digest`` and single-range ``Range``.

Spooled bodies are hashed and written in worker threads, a batch at a time, so the event
loop keeps reading the socket (the bench times transfers through this server).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .protocol import drop_connection

CHUNK = 1024 * 1024
_CHUNK = CHUNK
#: Read size when hashing spooled parts back (one buffer per call).
_FEED_BUFFER = 1024 * 1024


@dataclass
class Blob:
    """A stored file: its bytes in memory, the path of its spooled copy, or its parts."""

    size: int
    sha256: str
    content_type: str
    data: bytes | None = None
    path: Path | None = None
    #: A multipart file's parts (each spooled), served back to back.
    pieces: tuple[Blob, ...] = ()
    #: A multipart part's ETag: parts are not hashed (``sha256`` is empty), only files are.
    tag: str | None = None

    @property
    def etag(self) -> str:
        """A strong validator (a part's tag, else the content's hash), quoted for HTTP."""
        return f'"{self.tag or self.sha256[:32]}"'

    def read(self) -> bytes:
        """The whole content (blocking: call it from a worker thread for large files)."""
        return b"".join(self.iter_sync())

    def iter_sync(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Blocking chunks of ``[start, end)``."""
        end = self.size if end is None else end
        for blob, lo, hi in self._spans(start, end):
            if blob.data is not None:
                for offset in range(lo, hi, _CHUNK):
                    yield blob.data[offset : min(offset + _CHUNK, hi)]
                continue
            assert blob.path is not None
            with blob.path.open("rb") as source:
                source.seek(lo)
                while lo < hi and (chunk := source.read(min(_CHUNK, hi - lo))):
                    lo += len(chunk)
                    yield chunk

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Chunks of ``[start, end)`` without blocking the event loop."""
        for blob, lo, hi in self._spans(start, end):
            if blob.data is not None:
                for chunk in blob.iter_sync(lo, hi):
                    yield chunk
                continue
            async with await anyio.open_file(blob.path or "", "rb") as source:
                await source.seek(lo)
                while lo < hi and (chunk := await source.read(min(_CHUNK, hi - lo))):
                    lo += len(chunk)
                    yield chunk

    def _spans(self, start: int, end: int) -> Iterator[tuple[Blob, int, int]]:
        """``(blob, start, end)`` of each single blob that ``[start, end)`` covers."""
        if not self.pieces:
            yield self, start, end
            return
        offset = 0
        for piece in self.pieces:
            lo, hi = max(start, offset), min(end, offset + piece.size)
            if lo < hi:
                yield piece, lo - offset, hi - offset
            offset += piece.size
            if offset >= end:
                return

    def discard(self) -> None:
        """Delete the spooled copy or parts, if any."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        for piece in self.pieces:
            piece.discard()


@dataclass
class Spool:
    """A body on its way to disk: written and hashed in worker threads, a batch at a time."""

    def __init__(self, path: Path, hashed: bool) -> None:
        self.path = path
        self._hasher = hashlib.sha256() if hashed else None
        self._fd = -1

    def write(self, batch: list[bytes]) -> None:
        """Hash and append ``batch`` (blocking; hashlib and writev release the GIL)."""
        if self._fd < 0:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o600)
        if self._hasher is not None:
            for chunk in batch:
                self._hasher.update(chunk)
        written = os.writev(self._fd, batch)
        if written < sum(len(c) for c in batch):  # a short writev: rare, finish plainly
            rest = memoryview(b"".join(batch))[written:]
            while rest:
                rest = rest[os.write(self._fd, rest) :]

    def hexdigest(self) -> str:
        """The sha256 of everything written, or ``""`` when not hashing."""
        return self._hasher.hexdigest() if self._hasher is not None else ""

    def close(self) -> None:
        """Close the file (idempotent); it stays on disk."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


async def sha256_of(data: bytes) -> str:
    """The hex sha256 of ``data``, off the event loop when it is big."""
    if len(data) <= _CHUNK:
        return hashlib.sha256(data).hexdigest()
    return await anyio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest())


async def read_blob(blob: Blob) -> bytes:
    return await anyio.to_thread.run_sync(blob.read)


def feed(digest: Any, parts: list[Blob]) -> None:
    """Hash ``parts`` in order into ``digest`` (blocking: read back from their spool)."""
    buffer = bytearray(_FEED_BUFFER)
    view = memoryview(buffer)
    for part in parts:
        if part.path is None:
            digest.update(part.data or b"")
            continue
        with part.path.open("rb", buffering=0) as source:
            while count := source.readinto(buffer):
                digest.update(view[:count])


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | Literal[False]:
    """``[start, end)`` of a single-range ``Range`` header.

    None means "send it all" (no header, or one we do not support, such as several
    ranges: a 200 is a valid answer to those); False means unsatisfiable (416).
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header.removeprefix("bytes=").strip().partition("-")
    try:
        if not first:  # a suffix: the last N bytes
            start, end = max(0, size - int(last)), size
            return (start, end) if int(last) > 0 and size > 0 else False
        start, end = int(first), (int(last) + 1 if last else size)
    except ValueError:
        return None
    return (start, min(end, size)) if start < size and start < end else False


class BlobResponse(Response):
    """A stored file, whole or one range; ``fault`` may be ``truncate`` or ``corrupt``."""

    def __init__(
        self,
        blob: Blob,
        *,
        range_header: str | None,
        head: bool,
        fault: str | None,
        on_sent: Callable[[int], None],
    ) -> None:
        self._blob, self._head, self._fault, self._on_sent = blob, head, fault, on_sent
        span = byte_range(range_header, blob.size)
        # Content-Type is set verbatim: Starlette would append a charset to text/*.
        headers = {
            "accept-ranges": "bytes",
            "etag": blob.etag,
            "content-type": blob.content_type,
            # RFC 9530: the digest of the whole file, so a client can catch corruption.
            "repr-digest": f"sha-256=:{base64.b64encode(bytes.fromhex(blob.sha256)).decode()}:",
        }
        if span is False:
            status, self._span = 416, (0, 0)
            headers["content-range"] = f"bytes */{blob.size}"
        else:
            self._span = span or (0, blob.size)
            start, end = self._span
            headers["content-length"] = str(end - start)
            status = 206 if span else 200
            if span:
                headers["content-range"] = f"bytes {start}-{end - 1}/{blob.size}"
        super().__init__(status_code=status, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers, then the bytes (or some of them, then hang up)."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        start, end = self._span
        if self.status_code == 416 or self._head:
            await send({"type": "http.response.body", "body": b""})
            return
        budget = (end - start) // 2 if self._fault == "truncate" else end - start
        sent = 0
        async for chunk in self._blob.chunks(start, end):
            piece = chunk[: budget - sent]
            if self._fault == "corrupt" and piece:
                piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            sent += len(piece)
            if sent >= budget:
                break
        self._on_sent(sent)
        if self._fault == "truncate":
            await drop_connection(scope, receive)
            return
        await send({"type": "http.response.body", "body": b""})
