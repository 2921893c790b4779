"""video-to-video keeps the source's spatial structure: a burnt-in frame counter survives
every look, so a frame of the output says which source time it shows (issue 12)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import cast

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from runner.emulator._media import encode_image
from runner.emulator.render import START_FADE_FRAMES, render

V2V = "luma/agent/ray/v3.2/video-to-video"
SIZE = (320, 180)
BITS = 8
#: Blocks along the top: one always white, one always black, then the counter's bits.
BLOCKS = BITS + 2
BLOCK = SIZE[0] // BLOCKS


def counter_clip(frames: int) -> bytes:
    """An H.264 clip at 24 fps whose frame i shows i in binary as black and white blocks,
    over a mid-grey gradient background (so looks have colours to change)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=24, options={"preset": "ultrafast", "qp": "10"})
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        ramp = np.linspace(60, 190, SIZE[0], dtype=np.uint8)
        for index in range(frames):
            picture = np.empty((SIZE[1], SIZE[0], 3), dtype=np.uint8)
            picture[:] = ramp[None, :, None]
            picture[..., 2] = 200 - ramp[None, :]  # some colour for the looks to act on
            values = [255, 0, *((255 if index >> bit & 1 else 0) for bit in range(BITS))]
            for block, value in enumerate(values):
                picture[: SIZE[1] // 2, block * BLOCK : (block + 1) * BLOCK] = value
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buffer.getvalue()


def read_counters(data: bytes, skip: int = 0) -> Iterator[int]:
    """The counter shown by each frame of an output (after the first ``skip``), read by
    luminance against the two reference blocks (a look changes their colours, not their
    order)."""
    with av.open(io.BytesIO(data), "r") as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index < skip:
                continue
            scaled = frame.reformat(width=SIZE[0], height=SIZE[1], format="rgb24")
            picture = cast(NDArray[np.uint8], scaled.to_ndarray())
            luma = picture[: SIZE[1] // 2].astype(np.float32) @ np.array([0.299, 0.587, 0.114])
            means = [
                float(luma[8:-8, b * BLOCK + 8 : (b + 1) * BLOCK - 8].mean()) for b in range(BLOCKS)
            ]
            threshold = (means[0] + means[1]) / 2
            assert means[0] - means[1] > 40, "the reference blocks must stay apart"
            yield sum(1 << bit for bit in range(BITS) if means[bit + 2] > threshold)


@pytest.fixture(scope="module")
def two_seconds() -> bytes:
    """A 2 s (48-frame) counter clip."""
    return counter_clip(48)


@pytest.mark.parametrize(
    ("prompt", "strength"),
    [
        ("film noir", None),
        ("faded sepia", "flex_3"),
        ("neon cyberpunk", None),
        ("watercolor painting", "reimagine_3"),
        ("a dragon lands", "adhere_1"),
    ],
)
def test_each_output_frame_shows_the_source_frame_of_its_time(
    two_seconds: bytes, prompt: str, strength: str | None
) -> None:
    """Whatever the look, output frame i is source frame i; past the 2 s source's end the
    5 s output holds its last frame (v2v_short="pad", the default)."""
    args = {"prompt": prompt, "video_url": "src", "duration": "5s"}
    if strength:
        args["edit_strength"] = strength
    video = render(V2V, args, lambda url: two_seconds, seed=3)["video"].data
    counters = list(read_counters(video))
    assert len(counters) == 120
    assert counters[:48] == list(range(48))
    assert counters[48:] == [47] * 72


def test_a_long_source_gives_its_first_seconds(two_seconds: bytes) -> None:
    """A 10 s counter clip asked for 5 s shows source frames 0..119 (v2v_long="first")."""
    source = counter_clip(240)
    args = {"prompt": "cold winter", "video_url": "src", "duration": "5s"}
    video = render(V2V, args, lambda url: source, seed=3)["video"].data
    assert list(read_counters(video)) == list(range(120))


def test_start_image_hides_only_the_first_frames(two_seconds: bytes) -> None:
    """With start_image_url, the counter reads true again once the short dissolve is over."""
    picture = np.full((SIZE[1], SIZE[0], 3), 128, dtype=np.uint8)
    png = encode_image(picture, "png")
    args = {"prompt": "noir", "video_url": "src", "start_image_url": "img", "duration": "5s"}
    video = render(V2V, args, lambda url: png if url == "img" else two_seconds, seed=3)
    data = video["video"].data
    with av.open(io.BytesIO(data), "r") as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert float(np.abs(first.astype(np.int16) - 128).mean()) < 6  # frame 0 is the image
    assert list(read_counters(data, skip=START_FADE_FRAMES)) == [
        *range(START_FADE_FRAMES, 48),
        *[47] * 72,
    ]
