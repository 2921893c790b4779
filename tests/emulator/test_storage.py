"""The emulator's storage and CDN: token, uploads (single, multipart, REST), serving, stats."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runner.emulator.storage import FileStore, byte_range

from .conftest import Api

DATA = bytes(range(256)) * 4


def cdn_headers(
    api: Api, name: str = "clip.mp4", content_type: str = "video/mp4"
) -> dict[str, str]:
    """Headers fal_client sends to the CDN, with a freshly issued token."""
    token = api.client.post("/storage/auth/token?storage_type=fal-cdn-v3", json={}).json()
    return {
        "Authorization": f"{token['token_type']} {token['token']}",
        "Content-Type": content_type,
        "X-Fal-File-Name": name,
    }


def upload(api: Api, data: bytes = DATA, name: str = "clip.mp4") -> str:
    """Upload through the v3 CDN route and return the access URL."""
    response = api.plain.post(
        f"{api.storage}/files/upload", content=data, headers=cdn_headers(api, name)
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["access_url"]
    return url


def test_token_names_the_storage_origin(api: Api) -> None:
    """The CDN token is a Bearer token whose base_url is the storage origin, not the queue's."""
    token = api.client.post("/storage/auth/token?storage_type=fal-cdn-v3", json={}).json()
    assert token["token_type"] == "Bearer" and token["token"]
    assert token["base_url"] == api.storage != api.url
    assert token["expires_at"].endswith("+00:00")


def test_each_origin_serves_only_its_own_routes(api: Api) -> None:
    """Storage routes 404 on the queue origin, queue and REST routes 404 on the storage
    origin; the witness's routes answer on both."""
    headers = cdn_headers(api)
    url = upload(api)
    key_path = url.removeprefix(api.storage)
    queue = httpx.Client(base_url=api.url, timeout=10)
    with queue:
        assert queue.post("/files/upload", content=b"x", headers=headers).status_code == 404
        assert queue.get(key_path).status_code == 404
        assert queue.get("/_emulator/stats").status_code == 200
    assert (
        api.plain.post("/storage/auth/token", headers={"Authorization": "Key k"}).status_code == 404
    )
    assert (
        api.plain.post(f"/{api.T2V}", json={}, headers={"Authorization": "Key k"}).status_code
        == 404
    )
    assert api.plain.get("/_emulator/stats").status_code == 200
    assert api.stats()["submit_calls"] == 0


def test_single_upload_is_served_with_ranges(api: Api) -> None:
    """An uploaded file is served without auth, with length, type, ETag, HEAD and Range."""
    url = upload(api, name="my clip (1).mp4")
    assert url.startswith(f"{api.storage}/files/") and url.endswith("/my_clip_1_.mp4")
    whole = api.plain.get(url)
    assert whole.content == DATA and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(len(DATA)) and whole.headers["etag"]
    head = api.plain.head(url)
    assert head.headers["content-length"] == str(len(DATA)) and head.content == b""
    part = api.plain.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == DATA[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(DATA)}"
    assert api.plain.get(url, headers={"Range": "bytes=-5"}).content == DATA[-5:]
    assert api.plain.get(url, headers={"Range": "bytes=1000-"}).content == DATA[1000:]
    refused = api.plain.get(url, headers={"Range": f"bytes={len(DATA)}-"})
    assert refused.status_code == 416 and refused.headers["content-range"] == f"bytes */{len(DATA)}"
    assert api.plain.get(f"{api.storage}/files/nope/x.mp4").status_code == 404
    stats = api.stats()
    assert stats["uploads"] == 1 and stats["bytes_served"] == len(DATA) + 10 + 5 + 24


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", (0, 1)),
        ("bytes=5-", (5, 10)),
        ("bytes=-3", (7, 10)),
        ("bytes=8-99", (8, 10)),
        ("bytes=10-", False),
        ("bytes=-0", False),
        ("bytes=0-1,3-4", None),
        ("items=0-1", None),
    ],
)
def test_byte_range_parsing(header: str | None, expected: Any) -> None:
    """Range headers map to [start, end) of a 10-byte file, None (send all) or False (416)."""
    assert byte_range(header, 10) == expected


def test_cdn_uploads_need_an_issued_token(api: Api) -> None:
    """The CDN rejects a made-up Bearer token and the account key itself."""
    for authorization in ("Bearer made-up", "Key test"):
        response = api.plain.post(
            f"{api.storage}/files/upload", content=b"x", headers={"Authorization": authorization}
        )
        assert response.status_code == 401


MIB5 = 5 * 1024 * 1024


def test_multipart_upload_accepts_parts_in_any_order(api: Api) -> None:
    """Parts PUT out of order and listed in completion order join in part-number order."""
    headers = cdn_headers(api, "big.bin", "application/octet-stream")
    created = api.plain.post(f"{api.storage}/files/upload/multipart", headers=headers).json()
    assert created["access_url"].startswith(f"{api.storage}/files/")
    base = f"{created['access_url']}/multipart/{created['uploadId']}"
    first, second = b"1" * MIB5, b"2" * MIB5
    parts = []
    for number, chunk in ((2, second), (1, first), (3, b"-third")):
        answer = api.plain.put(f"{base}/{number}", content=chunk, headers=headers)
        assert answer.json() == {"partNumber": number, "etag": answer.headers["etag"]}
        parts.append(answer.json())
    wrong = [{**parts[0], "etag": '"0000"'}, *parts[1:]]
    assert (
        api.plain.post(f"{base}/complete", json={"parts": wrong}, headers=headers).status_code
        == 400
    )
    done = api.plain.post(f"{base}/complete", json={"parts": parts}, headers=headers)
    assert done.status_code == 200
    assert api.plain.get(created["access_url"]).content == first + second + b"-third"
    assert (
        api.plain.post(f"{base}/complete", json={"parts": parts}, headers=headers).status_code
        == 200
    )
    assert api.stats()["uploads"] == 1


def test_rest_initiate_then_put(api: Api) -> None:
    """The REST fallback: initiate gives an upload_url taking one unauthenticated PUT."""
    body = {"file_name": "frame.png", "content_type": "image/png"}
    initiated = api.client.post("/storage/upload/initiate?storage_type=gcs", json=body).json()
    assert api.plain.put(
        initiated["upload_url"], content=b"PNG", headers={"Content-Type": "image/png"}
    ).is_success
    served = api.plain.get(initiated["file_url"])
    assert served.content == b"PNG" and served.headers["content-type"] == "image/png"


def test_small_parts_but_the_last_are_refused_like_s3(api: Api) -> None:
    """A part under 5 MiB that is not the last fails the complete with 400 EntityTooSmall;
    part numbers outside 1..10000 are refused at once."""
    headers = cdn_headers(api, "big.bin", "application/octet-stream")
    created = api.plain.post("/files/upload/multipart", headers=headers).json()
    base = f"{created['access_url']}/multipart/{created['uploadId']}"
    parts = [
        api.plain.put(f"{base}/{n}", content=c, headers=headers).json()
        for n, c in ((1, b"1" * (MIB5 - 1)), (2, b"tail"))
    ]
    refused = api.plain.post(f"{base}/complete", json={"parts": parts}, headers=headers)
    assert refused.status_code == 400 and "EntityTooSmall" in refused.json()["detail"]
    assert api.plain.put(f"{base}/10001", content=b"x", headers=headers).status_code == 400
    assert api.plain.put(f"{base}/0", content=b"x", headers=headers).status_code == 400
    assert api.stats()["uploads"] == 0


def test_rest_initiate_multipart_like_the_js_client(api: Api) -> None:
    """The JS multipart flow: initiate-multipart, PUT {upload_url}/{n}, POST .../complete."""
    body = {"file_name": "clip.mp4", "content_type": "video/mp4"}
    initiated = api.client.post(
        "/storage/upload/initiate-multipart?storage_type=fal-cdn-v3", json=body
    ).json()
    assert initiated["upload_url"].startswith(api.storage)
    assert initiated["file_url"].startswith(f"{api.storage}/files/")
    parts = [
        api.plain.put(f"{initiated['upload_url']}/{n}", content=c).json()
        for n, c in ((1, b"a" * MIB5), (2, b"cd"))
    ]
    assert api.plain.post(f"{initiated['upload_url']}/complete", json={"parts": parts}).is_success
    assert api.plain.get(initiated["file_url"]).content == b"a" * MIB5 + b"cd"


def test_large_uploads_spool_to_disk(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies over the spool threshold are kept on disk and served back intact."""
    store: FileStore = api.emulator.app.state.emulator.store
    monkeypatch.setattr(store, "spool_threshold", 1000)
    data = bytes(range(256)) * 40
    url = upload(api, data)
    [blob] = store.files.values()
    assert blob.data is None and blob.path is not None and blob.path.stat().st_size == len(data)
    assert api.plain.get(url).content == data
    assert api.plain.get(url, headers={"Range": "bytes=5000-5009"}).content == data[5000:5010]


@pytest.mark.anyio
async def test_multipart_parts_spool_and_join(tmp_path: Any) -> None:
    """Multipart parts always go to disk; past the threshold the file is served from them."""
    store = FileStore(spool_threshold=8, min_part_size=1)  # a unit test of joining only

    async def body(*chunks: bytes) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    upload_id = store.start_multipart("k/file.bin", "application/octet-stream")
    one = await store.put_part(upload_id, 1, body(b"0123", b"4567"))
    two = await store.put_part(upload_id, 2, body(b"89"))
    assert one.path is not None and two.path is not None
    await store.complete(
        upload_id, [{"partNumber": 2, "etag": two.etag}, {"partNumber": 1, "etag": one.etag}]
    )
    joined = store.files["k/file.bin"]
    assert joined.data is None and joined.pieces == (one, two)
    assert joined.read() == b"0123456789"
    assert b"".join(joined.iter_sync(3, 9)) == b"345678"
    assert joined.sha256 == hashlib.sha256(b"0123456789").hexdigest()
    store.clear()
    assert not one.path.exists() and not two.path.exists()


def test_render_reads_uploaded_files_and_data_uris(api: Api) -> None:
    """The model fetches inputs from the emulator's files and from data: URIs."""
    url = upload(api, b"SOURCE")
    image = "data:image/png;base64," + base64.b64encode(b"START").decode()
    result = api.run({"prompt": "x", "video_url": url, "start_image_url": image}, api.V2V)
    assert result.status_code == 200
    assert api.plain.get(result.json()["video"]["url"]).content == b"VIDSTARTSOURCE"


def test_input_hash_sees_through_reuploads(api: Api) -> None:
    """The same bytes uploaded twice (or inlined) give one input_sha256: a duplicate submit."""
    first, second = upload(api, b"same bytes"), upload(api, b"same bytes")
    inline = "data:video/mp4;base64," + base64.b64encode(b"same bytes").decode()
    other = upload(api, b"other bytes")
    for url in (first, second, inline, other):
        api.submit({"prompt": "x", "video_url": url}, api.V2V)
    stats = api.stats()
    hashes = [r["input_sha256"] for r in stats["requests"]]
    assert first != second and hashes[0] == hashes[1] == hashes[2] != hashes[3]
    assert stats["submits"] == 4 and stats["distinct_inputs"] == 2


def test_stats_count_every_call_and_output(make_api: Any) -> None:
    """Stats count calls, peaks and slot use, and list each request with its outputs' hashes."""
    api = make_api(max_running=2)
    handles = [api.submit({"prompt": f"take {n}"}) for n in range(3)]
    for handle in handles:
        api.wait(handle)
    result = api.client.get(handles[0]["response_url"]).json()
    video = api.plain.get(result["video"]["url"]).content
    api.client.put(handles[0]["cancel_url"])
    stats = api.stats()
    assert stats["submits"] == stats["distinct_inputs"] == 3 and stats["result_calls"] == 1
    assert (
        stats["status_calls"] >= 3 and stats["cancels"] == 1 and stats["bytes_served"] == len(video)
    )
    assert stats["running_max"] == 2 and stats["slot_busy_seconds"] > 0
    assert 0 < stats["slot_utilisation"] <= 1
    request = stats["requests"][0]
    assert request["state"] == "COMPLETED" and request["error_type"] is None
    assert request["submitted_at"] <= request["started_at"] <= request["completed_at"]
    [output] = request["outputs"]
    assert output["sha256"] == hashlib.sha256(video).hexdigest() and output["size"] == len(video)


def test_reset_forgets_everything(api: Api) -> None:
    """POST /_emulator/reset clears requests, files and counters."""
    upload(api)
    handle = api.submit()
    api.emulator.reset()
    stats = api.stats()
    assert stats["submits"] == stats["uploads"] == stats["files"] == stats["status_calls"] == 0
    assert api.client.get(handle["status_url"]).status_code == 404
