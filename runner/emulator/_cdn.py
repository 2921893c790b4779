"""fal's storage: the CDN token (REST), uploads (v3 CDN, multipart, REST-initiated) and
the files themselves, served back without auth.

The token (``POST /storage/auth/token``) and the REST initiate routes live on the queue
origin, as rest.fal.ai is not the CDN; the upload and file routes live on the storage
origin, which the token names as ``base_url``: fal-client 1.0.3 builds its multipart URLs
from it (``fal_client/client.py`` ``MultipartUpload.create``, l.288 and l.469; read
2026-12-05) and fal's docs show more than one storage host (fal-protocol update
2026-12-04). fal-client's *single* upload still posts to its fixed ``CDN_URL`` (l.1459,
l.1475); @fal-ai/client 1.10.1 never uses the token: it asks rest.fal.ai to initiate
(``storage.js`` l.100, l.124) and PUTs to the ``upload_url`` it gets back, which the
emulator puts on the storage origin.

Multipart uploads are checked the way S3-style stores check them (fal's v3 CDN sits on
one): every part but the last is at least :data:`~.config.MIN_PART_SIZE` (5 MiB) or the
complete call gets 400 ``EntityTooSmall``; part numbers run 1..10,000; parts may arrive
and be listed in any order; a listed ETag that is not the part's gets 400 ``InvalidPart``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._origins import QUEUE_ROLES, STORAGE_ROLES
from .config import MAX_PARTS
from .faults import Fault
from .storage import BlobResponse, Multipart, PartsRejected

if TYPE_CHECKING:
    from .app import Emulator


def _content_type(request: Request, default: str = "application/octet-stream") -> str:
    return request.headers.get("content-type") or default


def _detail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


class CdnApi:
    """The storage and CDN handlers of one :class:`~.app.Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.store = emulator.store

    def routes(self) -> list[Route]:
        """Token and initiate on the queue (REST) origin; the rest on the storage origin."""
        e = self.emulator
        rest, cdn = QUEUE_ROLES, STORAGE_ROLES
        put = "/storage/upload/put/{upload_id}"
        files = "/files/{key:path}/multipart/{upload_id}"
        return [
            e.route("/storage/auth/token", "token", "key", self.token, ["POST"], rest),
            e.route("/storage/upload/initiate", "upload", "key", self.initiate, ["POST"], rest),
            e.route(
                "/storage/upload/initiate-multipart",
                "upload",
                "key",
                self.initiate,
                ["POST"],
                rest,
            ),
            e.route(put, "upload", "none", self.put_whole, ["PUT"], cdn),
            e.route(put + "/{part:int}", "upload", "none", self.put_part, ["PUT"], cdn),
            e.route(put + "/complete", "upload", "none", self.complete, ["POST"], cdn),
            e.route("/files/upload", "upload", "cdn", self.upload, ["POST"], cdn),
            e.route("/files/upload/multipart", "upload", "cdn", self.create, ["POST"], cdn),
            e.route(files + "/{part:int}", "upload", "cdn", self.put_part, ["PUT"], cdn),
            e.route(files + "/complete", "upload", "cdn", self.complete, ["POST"], cdn),
            e.route("/files/{key:path}", "cdn", "none", self.serve, ["GET", "HEAD"], cdn),
        ]

    def _file_url(self, request: Request, key: str) -> str:
        return f"{self.emulator.storage_origin(request)}/files/{key}"

    async def token(self, request: Request, fault: Fault | None) -> Response:
        """A CDN token; its ``base_url`` is the storage origin."""
        token = secrets.token_urlsafe(24)
        self.emulator.tokens.add(token)
        if self.emulator.journal is not None:
            self.emulator.journal.save_token(token)
        expires = datetime.now(UTC) + timedelta(hours=1)
        body = {
            "token": token,
            "token_type": "Bearer",
            "base_url": self.emulator.storage_origin(request),
            "expires_at": expires.isoformat(),
        }
        return JSONResponse(body)

    async def upload(self, request: Request, fault: Fault | None) -> Response:
        """``POST /files/upload``: one whole file."""
        blob = await self.store.receive(request.stream(), _content_type(request))
        key = self.store.new_key(request.headers.get("x-fal-file-name"))
        self.store.put(key, blob)
        self.emulator.uploads += 1
        return JSONResponse({"access_url": self._file_url(request, key)})

    async def create(self, request: Request, fault: Fault | None) -> Response:
        """``POST /files/upload/multipart``: open a multipart upload."""
        key = self.store.new_key(request.headers.get("x-fal-file-name"))
        upload_id = self.store.start_multipart(key, _content_type(request))
        return JSONResponse({"access_url": self._file_url(request, key), "uploadId": upload_id})

    async def initiate(self, request: Request, fault: Fault | None) -> Response:
        """REST ``initiate[-multipart]``: a session whose ``upload_url`` (on the storage
        origin, like a signed URL) takes one PUT of the whole file, or numbered part PUTs
        and a complete (the JS multipart flow)."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        key = self.store.new_key(body.get("file_name"))
        upload_id = self.store.start_multipart(
            key, body.get("content_type") or "application/octet-stream"
        )
        origin = self.emulator.storage_origin(request)
        return JSONResponse(
            {
                "upload_url": f"{origin}/storage/upload/put/{upload_id}",
                "file_url": f"{origin}/files/{key}",
            }
        )

    def _session(self, request: Request) -> Multipart | None:
        upload = self.store.uploads.get(request.path_params["upload_id"])
        key = request.path_params.get("key")
        return None if upload is None or key not in (None, upload.key) else upload

    async def put_whole(self, request: Request, fault: Fault | None) -> Response:
        """PUT of a whole file to a REST session's ``upload_url``."""
        upload = self._session(request)
        if upload is None:
            return _detail(404, "Upload not found")
        blob = await self.store.receive(
            request.stream(), _content_type(request, upload.content_type)
        )
        self.store.put(upload.key, blob)
        upload.done = True
        self.emulator.uploads += 1
        return Response(status_code=200)

    async def put_part(self, request: Request, fault: Fault | None) -> Response:
        """PUT of part N: its ETag in the header (PY) and in a JSON body (JS)."""
        if self._session(request) is None:
            return _detail(404, "Upload not found")
        number = request.path_params["part"]
        if not 1 <= number <= MAX_PARTS:
            return _detail(400, f"InvalidArgument: part numbers run from 1 to {MAX_PARTS}")
        blob = await self.store.put_part(request.path_params["upload_id"], number, request.stream())
        return JSONResponse({"partNumber": number, "etag": blob.etag}, headers={"ETag": blob.etag})

    async def complete(self, request: Request, fault: Fault | None) -> Response:
        """Join the listed parts; 400 for a bad list, a wrong ETag or a small part."""
        upload = self._session(request)
        if upload is None:
            return _detail(404, "Upload not found")
        was_done = upload.done
        try:
            parts: Any = (await request.json())["parts"]
            await self.store.complete(request.path_params["upload_id"], parts)
        except PartsRejected as exc:
            return _detail(400, str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return _detail(400, f"Cannot complete the upload: {exc}")
        self.emulator.uploads += 0 if was_done else 1
        url = self._file_url(request, upload.key)
        return JSONResponse({"access_url": url, "file_url": url})

    async def serve(self, request: Request, fault: Fault | None) -> Response:
        """A stored file, whole or a range, with the ``truncate``/``corrupt`` faults."""
        blob = self.store.files.get(request.path_params["key"])
        if blob is None:
            return _detail(404, "Not Found")
        damage = fault.kind if fault is not None and fault.kind in ("truncate", "corrupt") else None
        if fault is not None and damage:
            self.emulator.faults.record("cdn", fault)
        return BlobResponse(
            blob,
            range_header=request.headers.get("range"),
            head=request.method == "HEAD",
            fault=damage,
            on_sent=self._count_served,
        )

    def _count_served(self, size: int) -> None:
        self.emulator.bytes_served += size
