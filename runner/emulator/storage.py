"""The emulated fal CDN: stored files, multipart assembly, URL resolution and serving.

Files live in memory; a body over :data:`SPOOL_THRESHOLD` (the 1 GiB bench upload) goes
to a temporary directory the store owns instead, and multipart parts always do, so an
upload never has to fit in RAM. A large multipart file is served from its parts' spooled
copies in order rather than joined into one more copy. Files are served with
Content-Length, ETag and single-range ``Range`` support, the way fal's CDN answers
download resumption.

The bench times raybatch's transfers through this server, so its own costs stay off the
event loop: a spooled body is hashed and written in a worker thread while the loop keeps
reading the socket, and a multipart file's sha256 advances part by part as the parts
arrive (parts are tagged, not hashed), so completing an upload only hashes what is left.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
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
#: Bytes handed to the spool writer at a time: one thread hop and one writev each.
_BATCH = 4 * 1024 * 1024
#: Chunks per batch at most (writev takes at most IOV_MAX = 1024 buffers).
_BATCH_CHUNKS = 512
#: Batches the socket may run ahead of the disk.
_BATCHES_AHEAD = 2
#: Read size when hashing spooled parts back (one buffer per call).
_FEED_BUFFER = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
class Multipart:
    """An upload in parts: where it will land and the parts received so far."""

    key: str
    content_type: str
    parts: dict[int, Blob] = field(default_factory=dict)
    done: bool = False
    #: Parts 1, 2, ... fed to ``digest`` so far, in order: the file's hash, built as parts land.
    hashed: list[Blob] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    #: Held while ``parts``, ``hashed`` or ``digest`` change across an await.
    lock: anyio.Lock = field(default_factory=anyio.Lock)


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
        self,
        chunks: AsyncIterator[bytes],
        content_type: str,
        *,
        spool_over: int | None = None,
        hashed: bool = True,
    ) -> Blob:
        """Read a request body into a blob, spooling to disk past ``spool_over`` bytes.

        ``hashed=False`` (multipart parts) tags the blob with a fresh ETag instead of
        hashing it.
        """
        limit = self.spool_threshold if spool_over is None else spool_over
        held: list[bytes] = []
        held_size = size = 0
        spool: _Spool | None = None
        failed: list[BaseException] = []
        send, queued = anyio.create_memory_object_stream[list[bytes]](_BATCHES_AHEAD)

        async def write_queued() -> None:
            with queued:
                async for batch in queued:
                    if failed or spool is None:
                        continue  # keep draining so the reader never waits on a dead writer
                    try:
                        await anyio.to_thread.run_sync(spool.write, batch)
                    except OSError as exc:
                        failed.append(exc)

        # Failures are recorded, not raised, inside the task group, which would wrap them
        # in an ExceptionGroup (and callers expect a client's disconnect as it is).
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(write_queued)
                with send:
                    try:
                        async for chunk in chunks:
                            held.append(chunk)
                            held_size += len(chunk)
                            size += len(chunk)
                            if spool is None and size > limit:
                                spool = _Spool(self._new_path(), hashed)
                            if spool is not None and (
                                held_size >= _BATCH or len(held) >= _BATCH_CHUNKS
                            ):
                                await send.send(held)
                                held, held_size = [], 0
                        if spool is not None and held:
                            await send.send(held)
                    except Exception as exc:
                        failed.insert(0, exc)
            if failed:
                raise failed[0]
        except BaseException:
            if spool is not None:
                spool.close()
                spool.path.unlink(missing_ok=True)
            raise
        tag = None if hashed else uuid.uuid4().hex
        if spool is not None:
            spool.close()
            return Blob(size, spool.hexdigest(), content_type, path=spool.path, tag=tag)
        data = b"".join(held)
        digest = await _sha256(data) if hashed else ""
        return Blob(size, digest, content_type, data, tag=tag)

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
        blob = await self.receive(chunks, upload.content_type, spool_over=0, hashed=False)
        async with upload.lock:
            if (old := upload.parts.pop(number, None)) is not None:
                old.discard()
                if any(part is old for part in upload.hashed):
                    upload.hashed, upload.digest = [], hashlib.sha256()
            upload.parts[number] = blob
            # Hash every part that now continues the in-order prefix, so that completing
            # the upload is left with (at most) the last few parts to hash.
            while (nxt := upload.parts.get(len(upload.hashed) + 1)) is not None:
                await anyio.to_thread.run_sync(_feed, upload.digest, [nxt])
                upload.hashed.append(nxt)
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
        async with upload.lock:
            if upload.done:
                return upload.key
            if not listed or any(
                n not in upload.parts or upload.parts[n].etag.strip('"') != etag
                for n, etag in listed.items()
            ):
                raise ValueError("parts do not match the uploaded parts")
            ordered = [upload.parts[n] for n in sorted(listed)]
            done = len(upload.hashed)
            prefix = ordered[:done]
            if len(prefix) == done and all(
                a is b for a, b in zip(upload.hashed, prefix, strict=True)
            ):
                digest = upload.digest
            else:  # the running hash covers other parts than these: start again
                digest, done = hashlib.sha256(), 0
            await anyio.to_thread.run_sync(_feed, digest, ordered[done:])
            size = sum(p.size for p in ordered)
            blob = Blob(size, digest.hexdigest(), upload.content_type, pieces=tuple(ordered))
            if size <= self.spool_threshold:  # small: keep it in memory like any other
                blob = Blob(size, blob.sha256, blob.content_type, await _read(blob))
            for part in upload.parts.values():
                if blob.data is not None or not any(part is p for p in ordered):
                    part.discard()
            upload.parts.clear()
            upload.hashed = []
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


class _Spool:
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


async def _sha256(data: bytes) -> str:
    """The hex sha256 of ``data``, off the event loop when it is big."""
    if len(data) <= _CHUNK:
        return hashlib.sha256(data).hexdigest()
    return await anyio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest())


async def _read(blob: Blob) -> bytes:
    return await anyio.to_thread.run_sync(blob.read)


def _feed(digest: Any, parts: list[Blob]) -> None:
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
