"""The runner's uploads reach storage on its own origin through the CDN token's base_url.

runner.fal.FalClient is configured the way ``--fal-url`` configures it: queue, REST and
CDN all at the emulator's queue origin. The queue origin refuses storage routes, so an
upload only succeeds if the runner builds its URLs from the token's ``base_url`` (the
storage origin), as fal's own client does.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from runner.fal import FalClient, FalConfig, _storage as fal

from .conftest import KEY, Api

MIB = 1024 * 1024


def big_file(path: Path, mib: int) -> str:
    """Write ``mib`` MiB that differ from MiB to MiB; return their sha256."""
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for index in range(mib):
            chunk = index.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


async def upload(api: Api, path: Path) -> str:
    """Upload ``path`` with the runner's client, configured with one (queue) origin."""
    async with FalClient(FalConfig.single_origin(api.url, KEY)) as client:
        return await client.upload(path, "video/mp4")


@pytest.mark.anyio
async def test_110_mib_multipart_upload_goes_through_base_url(
    make_api: Any, tmp_path: Path
) -> None:
    """A 110 MiB file: multipart in 10 MiB parts (every part but the last >= 5 MiB, checked
    by the emulator as S3 does) on the storage origin; the file arrives intact."""
    api = make_api()
    path = tmp_path / "footage.mp4"
    sha = big_file(path, 110)
    url = await upload(api, path)
    assert url.startswith(f"{api.storage}/files/") and url.endswith("/footage.mp4")
    [stored] = api.emulator.emulator.store.files.values()
    assert stored.size == 110 * MIB and stored.sha256 == sha
    stats = api.stats()
    assert stats["uploads"] == 1 and stats["upload_calls"] == 1 + 11 + 1  # create, parts, complete


@pytest.mark.anyio
async def test_single_upload_goes_through_base_url(make_api: Any, tmp_path: Path) -> None:
    """A small file is one POST, to the token's base_url too (the queue origin refuses it)."""
    api = make_api()
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"small clip")
    url = await upload(api, path)
    assert url.startswith(f"{api.storage}/files/")
    assert api.plain.get(url).content == b"small clip"


@pytest.mark.anyio
async def test_part_size_grows_to_stay_within_the_part_limit(
    make_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a part-count limit of 5 (S3's is 10,000), 110 MiB goes as 5 parts of 22 MiB
    rather than 11 of 10 MiB: parts grow, they never shrink below PART_SIZE."""
    monkeypatch.setattr(fal, "MAX_PARTS", 5)
    api = make_api()
    path = tmp_path / "footage.mp4"
    sha = big_file(path, 110)
    await upload(api, path)
    [stored] = api.emulator.emulator.store.files.values()
    assert stored.sha256 == sha and [p.size for p in stored.pieces] == [22 * MIB] * 5
    assert api.stats()["upload_calls"] == 1 + 5 + 1
