"""The emulated fal CDN: stored files, multipart assembly and URL resolution.

Files live in memory; a body over :data:`SPOOL_THRESHOLD` (the 1 GiB bench upload) goes
to a temporary directory the store owns instead, and multipart parts always do, so an
upload never has to fit in RAM. A large multipart file is served from its parts' spooled
copies in order rather than joined into one more copy (see ``_blob.py`` for serving).
With a ``directory`` (an emulator's state directory) every file goes to disk there and
is journalled, so that a restarted emulator still serves it.

The bench times raybatch's transfers through this server, so its own costs stay off the
event loop: a spooled body is hashed and written in a worker thread while the loop keeps
reading the socket, and a multipart file's sha256 advances part by part as the parts
arrive (parts are tagged, not hashed), so completing an upload only hashes what is left.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import anyio

from ._blob import Blob, BlobResponse, Spool, byte_range, feed, read_blob, sha256_of
from .config import MIN_PART_SIZE

__all__ = ["Blob", "BlobResponse", "FileStore", "Multipart", "PartsRejected", "byte_range"]

SPOOL_THRESHOLD = 32 * 1024 * 1024
#: Bytes handed to the spool writer at a time: one thread hop and one writev each.
_BATCH = 4 * 1024 * 1024
#: Chunks per batch at most (writev takes at most IOV_MAX = 1024 buffers).
_BATCH_CHUNKS = 512
#: Batches the socket may run ahead of the disk.
_BATCHES_AHEAD = 2
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PartsRejected(ValueError):
    """A multipart complete the store refuses, worded like S3's error codes."""


class FileJournal(Protocol):
    """Where a state directory keeps files (see ``_persist.py``)."""

    def save_file(self, key: str, record: dict[str, Any]) -> None:
        """Write one file's record."""

    def clear_files(self) -> None:
        """Forget every file."""


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

    def __init__(
        self,
        spool_threshold: int = SPOOL_THRESHOLD,
        *,
        directory: Path | None = None,
        min_part_size: int = MIN_PART_SIZE,
    ) -> None:
        self.spool_threshold = spool_threshold
        self.min_part_size = min_part_size
        self.files: dict[str, Blob] = {}
        self.uploads: dict[str, Multipart] = {}
        #: Set (by the app, after a restore) to journal every stored file.
        self.journal: FileJournal | None = None
        self.persistent = directory is not None
        self._kept_dir = directory
        self._dir: Path | None = directory

    def new_key(self, file_name: str | None) -> str:
        """A fresh, unguessable key ending in the (sanitised) file name."""
        return f"{uuid.uuid4().hex[:16]}/{safe_name(file_name)}"

    def _new_path(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="raybatch-emulator-"))
        self._dir.mkdir(parents=True, exist_ok=True)
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
        spool: Spool | None = None
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
                                spool = Spool(self._new_path(), hashed)
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
        digest = await sha256_of(data) if hashed else ""
        return Blob(size, digest, content_type, data, tag=tag)

    async def add(self, key: str, data: bytes, content_type: str) -> Blob:
        """Store generated bytes under ``key`` (spooled if large)."""
        blob = Blob(len(data), hashlib.sha256(data).hexdigest(), content_type, data)
        if len(data) > self.spool_threshold or self.persistent:
            blob.path, blob.data = self._new_path(), None
            await anyio.to_thread.run_sync(blob.path.write_bytes, data)
        self.put(key, blob)
        return blob

    def put(self, key: str, blob: Blob) -> None:
        """Store a blob under ``key``, replacing (and discarding) any previous one.

        With a directory, the file is on disk and journalled, so it survives a restart.
        """
        if (old := self.files.get(key)) is not None and old is not blob:
            old.discard()
        if self.persistent and blob.path is None and not blob.pieces:
            # Small bodies are held in memory; a state directory keeps every file on disk.
            blob.path = self._new_path()
            blob.path.write_bytes(blob.data or b"")
            blob.data = None
        self.files[key] = blob
        if self.journal is not None:
            paths = [str(p.path) for p in blob.pieces] if blob.pieces else [str(blob.path)]
            record = {"size": blob.size, "sha256": blob.sha256, "content_type": blob.content_type}
            self.journal.save_file(key, {**record, "paths": paths})

    def restore(self, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Take back the files a state directory kept (those whose bytes are still there)."""
        for key, data in records:
            paths = [Path(p) for p in data["paths"]]
            if not all(p.is_file() for p in paths):
                continue
            meta = (data["size"], data["sha256"], data["content_type"])
            if len(paths) == 1:
                self.files[key] = Blob(*meta, path=paths[0])
            else:
                sizes = [p.stat().st_size for p in paths]
                pieces = tuple(
                    Blob(n, "", meta[2], path=p) for n, p in zip(sizes, paths, strict=True)
                )
                self.files[key] = Blob(*meta, pieces=pieces)

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
                await anyio.to_thread.run_sync(feed, upload.digest, [nxt])
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
                raise PartsRejected(
                    "InvalidPart: one or more of the specified parts could not be found,"
                    " or its entity tag did not match the part's entity tag"
                )
            ordered = [upload.parts[n] for n in sorted(listed)]
            if any(part.size < self.min_part_size for part in ordered[:-1]):
                raise PartsRejected(
                    "EntityTooSmall: your proposed upload is smaller than the minimum allowed"
                    f" size (every part but the last must be at least {self.min_part_size}"
                    " bytes)"
                )
            done = len(upload.hashed)
            prefix = ordered[:done]
            if len(prefix) == done and all(
                a is b for a, b in zip(upload.hashed, prefix, strict=True)
            ):
                digest = upload.digest
            else:  # the running hash covers other parts than these: start again
                digest, done = hashlib.sha256(), 0
            await anyio.to_thread.run_sync(feed, digest, ordered[done:])
            size = sum(p.size for p in ordered)
            blob = Blob(size, digest.hexdigest(), upload.content_type, pieces=tuple(ordered))
            if size <= self.spool_threshold:  # small: keep it in memory like any other
                blob = Blob(size, blob.sha256, blob.content_type, await read_blob(blob))
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
        if self.journal is not None:
            self.journal.clear_files()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = self._kept_dir
