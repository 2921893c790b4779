"""The emulated fal CDN: stored files, multipart assembly, URL resolution and serving.

Files live in memory; a body over :data:`SPOOL_THRESHOLD` (the 1 GiB bench upload) goes
to a temporary directory the store owns instead, and multipart parts always do, so an
upload never has to fit in RAM. Files are served with Content-Length, ETag and
single-range ``Range`` support, the way fal's CDN answers download resumption.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .protocol import drop_connection

SPOOL_THRESHOLD = 32 * 1024 * 1024
_CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Blob:
    """A stored file: its bytes in memory, or the path of its spooled copy."""

    size: int
    sha256: str
    content_type: str
    data: bytes | None = None
    path: Path | None = None

    @property
    def etag(self) -> str:
        """A strong validator derived from the content, quoted like an HTTP ETag."""
        return f'"{self.sha256[:32]}"'

    def read(self) -> bytes:
        """The whole content (blocking: call it from a worker thread for large files)."""
        return b"".join(self.iter_sync())

    def iter_sync(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Blocking chunks of ``[start, end)``."""
        end = self.size if end is None else end
        if self.data is not None:
            for offset in range(start, end, _CHUNK):
                yield self.data[offset : min(offset + _CHUNK, end)]
            return
        assert self.path is not None
        with self.path.open("rb") as source:
            source.seek(start)
            while start < end and (chunk := source.read(min(_CHUNK, end - start))):
                start += len(chunk)
                yield chunk

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Chunks of ``[start, end)`` without blocking the event loop."""
        if self.data is not None:
            for chunk in self.iter_sync(start, end):
                yield chunk
            return
        async with await anyio.open_file(self.path or "", "rb") as source:
            await source.seek(start)
            while start < end and (chunk := await source.read(min(_CHUNK, end - start))):
                start += len(chunk)
                yield chunk

    def discard(self) -> None:
        """Delete the spooled copy, if any."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class Multipart:
    """An upload in parts: where it will land and the parts received so far."""

    key: str
    content_type: str
    parts: dict[int, Blob] = field(default_factory=dict)
    done: bool = False


def safe_name(name: str | None) -> str:
    """A file name fit for a URL path segment; ``upload.bin`` when there is none."""
    cleaned = _UNSAFE.sub("_", name or "").lstrip("._")[-100:]
    return cleaned or "upload.bin"


def decode_data_uri(url: str) -> bytes:
    """The bytes of a ``data:`` URI; ValueError if it is malformed."""
    header, sep, payload = url.removeprefix("data:").partition(",")
    if not sep:
        raise ValueError("malformed data: URI")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise ValueError("malformed base64 in data: URI") from exc
    return unquote(payload).encode("latin-1", errors="replace")


class FileStore:
    """Every file the emulator holds, uploaded or generated, keyed by its URL path."""

    def __init__(self, spool_threshold: int = SPOOL_THRESHOLD) -> None:
        self.spool_threshold = spool_threshold
        self.files: dict[str, Blob] = {}
        self.uploads: dict[str, Multipart] = {}
        self._dir: Path | None = None

    def new_key(self, file_name: str | None) -> str:
        """A fresh, unguessable key ending in the (sanitised) file name."""
        return f"{uuid.uuid4().hex[:16]}/{safe_name(file_name)}"

    def _new_path(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="raybatch-emulator-"))
        return self._dir / uuid.uuid4().hex

    async def receive(
        self, chunks: AsyncIterator[bytes], content_type: str, *, spool_over: int | None = None
    ) -> Blob:
        """Read a request body into a blob, spooling to disk past ``spool_over`` bytes."""
        limit = self.spool_threshold if spool_over is None else spool_over
        digest, size, buffer = hashlib.sha256(), 0, bytearray()
        path: Path | None = None
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                if path is None and size > limit:
                    path = self._new_path()
                if path is not None and len(buffer) >= _CHUNK:
                    await _append(path, buffer)
            if path is not None:
                await _append(path, buffer)
        except BaseException:
            if path is not None:
                path.unlink(missing_ok=True)
            raise
        data = None if path else bytes(buffer)
        return Blob(size, digest.hexdigest(), content_type, data, path)

    async def add(self, key: str, data: bytes, content_type: str) -> Blob:
        """Store generated bytes under ``key`` (spooled if large)."""
        blob = Blob(len(data), hashlib.sha256(data).hexdigest(), content_type, data)
        if len(data) > self.spool_threshold:
            blob.path, blob.data = self._new_path(), None
            await anyio.to_thread.run_sync(blob.path.write_bytes, data)
        self.put(key, blob)
        return blob

    def put(self, key: str, blob: Blob) -> None:
        """Store a blob under ``key``, replacing (and discarding) any previous one."""
        if (old := self.files.get(key)) is not None and old is not blob:
            old.discard()
        self.files[key] = blob

    def start_multipart(self, key: str, content_type: str) -> str:
        """Open a multipart upload that will land at ``key``; returns its upload id."""
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = Multipart(key, content_type)
        return upload_id

    async def put_part(self, upload_id: str, number: int, chunks: AsyncIterator[bytes]) -> Blob:
        """Receive part ``number`` (always spooled); KeyError for an unknown upload."""
        upload = self.uploads[upload_id]
        blob = await self.receive(chunks, upload.content_type, spool_over=0)
        if (old := upload.parts.pop(number, None)) is not None:
            old.discard()
        upload.parts[number] = blob
        return blob

    async def complete(self, upload_id: str, parts: Any) -> str:
        """Join the listed parts (any order) into the final file; returns its key.

        KeyError for an unknown upload, ValueError for a part list that does not match
        what was uploaded. Completing twice is harmless, as a retried request should be.
        """
        upload = self.uploads[upload_id]
        if upload.done:
            return upload.key
        try:
            listed = {int(p["partNumber"]): str(p["etag"]).strip('"') for p in parts}
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError("parts must be a list of {partNumber, etag}") from exc
        if not listed or any(
            n not in upload.parts or upload.parts[n].etag.strip('"') != etag
            for n, etag in listed.items()
        ):
            raise ValueError("parts do not match the uploaded parts")
        ordered = [upload.parts[n] for n in sorted(listed)]
        size = sum(p.size for p in ordered)
        target = self._new_path() if size > self.spool_threshold else None
        blob = await anyio.to_thread.run_sync(_join, ordered, upload.content_type, target)
        for part in upload.parts.values():
            part.discard()
        upload.parts.clear()
        upload.done = True
        self.put(upload.key, blob)
        return upload.key

    def find(self, url: str, origin: str) -> Blob | None:
        """The stored file an ``http(s)://{origin}/files/...`` URL names, if any."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.netloc != origin:
            return None
        if not parts.path.startswith("/files/"):
            return None
        return self.files.get(unquote(parts.path.removeprefix("/files/")))

    def fetch(self, url: str, origin: str) -> bytes:
        """The bytes behind a URL a model may read: a data: URI or one of our files.

        Blocking; anything else raises ValueError, since the emulator has no Internet.
        """
        if url.startswith("data:"):
            return decode_data_uri(url)
        blob = self.find(url, origin)
        if blob is None:
            raise ValueError(f"could not fetch {url[:200]}")
        return blob.read()

    def content_sha256(self, url: str, origin: str) -> str | None:
        """sha256 of the bytes a URL stands for, if they are known without the network."""
        if url.startswith("data:"):
            try:
                return hashlib.sha256(decode_data_uri(url)).hexdigest()
            except ValueError:
                return None
        blob = self.find(url, origin)
        return blob.sha256 if blob else None

    def clear(self) -> None:
        """Forget every file and upload and delete their spooled copies."""
        self.files.clear()
        self.uploads.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


async def _append(path: Path, buffer: bytearray) -> None:
    async with await anyio.open_file(path, "ab") as out:
        await out.write(bytes(buffer))
    buffer.clear()


def _join(parts: list[Blob], content_type: str, target: Path | None) -> Blob:
    digest = hashlib.sha256()
    with target.open("wb") if target else io.BytesIO() as out:
        for part in parts:
            for chunk in part.iter_sync():
                digest.update(chunk)
                out.write(chunk)
        data = out.getvalue() if isinstance(out, io.BytesIO) else None
    return Blob(sum(p.size for p in parts), digest.hexdigest(), content_type, data, target)


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
