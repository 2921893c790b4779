"""The emulator's renderer makes real, request-shaped media for every endpoint.

Outputs are checked by decoding them with PyAV: sizes, frame counts, colour tags, and
pixel statistics that show the requested look, placement or cross-fade really happened.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from runner.emulator.render import (
    REALISTIC_BITRATES,
    START_FADE_FRAMES,
    RenderedFile,
    RenderError,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
V2V = "luma/agent/ray/v3.2/video-to-video"
T2V = "luma/agent/ray/v3.2/text-to-video"
I2V = "luma/agent/ray/v3.2/image-to-video"
REFRAME = "luma/agent/ray/v3.2/reframe"
T2I = "luma/agent/uni-1/v1/text-to-image"
EDIT = "luma/agent/uni-1/v1/edit"

Pixels = NDArray[np.uint8]


def rgb(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> Pixels:
    """A frame as RGB pixels, scaled to ``size`` (width, height) if given."""
    if size is not None:
        frame = frame.reformat(width=size[0], height=size[1])
    return cast(Pixels, frame.to_ndarray(format="rgb24"))


def fetch(url: str) -> bytes:
    """Inputs are named by their path in the repository, as the app would store them."""
    return (ROOT / url).read_bytes()


def media(name: str) -> str:
    """The URL of a demo source file."""
    return f"manifests/media/{name}"


@dataclass
class Clip:
    """What a decoder sees in an MP4."""

    width: int
    height: int
    frames: list[Pixels]
    seconds: float
    pix_fmt: str
    primaries: int
    transfer: int
    colorspace: int


def decode(data: bytes, size: tuple[int, int] | None = None) -> Clip:
    """Every frame of a video as RGB (scaled to ``size`` if given) plus its stream facts."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        codec = stream.codec_context
        width, height = codec.width, codec.height
        frames = [rgb(f, size) for f in container.decode(stream)]
        return Clip(
            width,
            height,
            frames,
            (container.duration or 0) / av.time_base,
            codec.pix_fmt or "",
            int(codec.color_primaries),
            int(codec.color_trc),
            int(codec.colorspace),
        )


def first_frame(url: str, size: tuple[int, int] | None = None) -> Pixels:
    """The first picture of an input file, optionally scaled."""
    with av.open(str(ROOT / url), "r") as container:
        return rgb(next(container.decode(video=0)), size)


def first_frame_of(data: bytes) -> Pixels:
    """The first picture in an encoded file."""
    with av.open(io.BytesIO(data), "r") as container:
        return rgb(next(container.decode(video=0)))


def difference(a: Pixels, b: Pixels) -> float:
    """Mean absolute pixel difference, 0-255."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def colourfulness(picture: Pixels) -> float:
    """Mean spread between a pixel's channels: 0 for greys."""
    channels = picture.astype(np.int16)
    return float((channels.max(axis=2) - channels.min(axis=2)).mean())


def sharpness(picture: Pixels) -> float:
    """Mean absolute horizontal gradient: high for crisp detail, low for blur."""
    return float(np.abs(np.diff(picture.astype(np.int16), axis=1)).mean())


def video_of(endpoint: str, arguments: dict[str, Any], **options: Any) -> RenderedFile:
    """Render a video endpoint and return its video file."""
    result = render(endpoint, arguments, fetch, seed=options.pop("seed", 7), **options)
    video = result["video"]
    assert isinstance(video, RenderedFile)
    assert (video.content_type, video.file_name) == ("video/mp4", "output.mp4")
    return video


def test_video_to_video_is_a_playable_restyled_clip_of_the_requested_length() -> None:
    """v2v restyles the source into a silent 540p H.264 MP4 of the requested 5 s or 10 s."""
    for duration, frames in (("5s", 120), ("10s", 240)):
        args = {"prompt": "noir detective", "video_url": media("beach.mp4"), "duration": duration}
        result = render(V2V, args, fetch, seed=1)
        assert result["exr_file"] is None
        data = result["video"].data
        clip = decode(data)
        assert (clip.width, clip.height) == (960, 540)
        assert len(clip.frames) == frames
        assert clip.seconds == pytest.approx(frames / 24, abs=0.05)
        assert clip.pix_fmt == "yuv420p"
        with av.open(io.BytesIO(data), "r") as container:
            assert len(container.streams.audio) == 0  # Ray 3.2 returns silent video
        source = first_frame(media("beach.mp4"), (960, 540))
        assert difference(clip.frames[0], source) > 20


def test_video_to_video_prompt_words_choose_the_look() -> None:
    """A noir prompt gives greys; a neon prompt gives a vivid, different picture."""
    noir = decode(
        video_of(V2V, {"prompt": "film noir", "video_url": media("beach.mp4")}, max_frames=2).data
    )
    neon = decode(
        video_of(
            V2V, {"prompt": "neon cyberpunk", "video_url": media("beach.mp4")}, max_frames=2
        ).data
    )
    source = first_frame(media("beach.mp4"), (960, 540))
    assert colourfulness(noir.frames[0]) < colourfulness(source) / 3
    assert colourfulness(neon.frames[0]) > colourfulness(noir.frames[0]) * 3
    assert difference(noir.frames[0], neon.frames[0]) > 30


def test_video_to_video_unknown_style_still_changes_the_colours() -> None:
    """A prompt with no style word gets a hue turn fixed by the prompt: visible and repeatable."""
    args = {"prompt": "a dragon lands", "video_url": media("forest.mp4")}
    once, twice = (decode(video_of(V2V, args, max_frames=2).data) for _ in range(2))
    source = first_frame(media("forest.mp4"), (960, 540))
    assert difference(once.frames[0], source) > 15
    assert difference(once.frames[0], twice.frames[0]) == 0


def test_video_to_video_edit_strength_scales_the_change() -> None:
    """adhere_1 stays close to the source; reimagine_3 departs much further."""
    source = first_frame(media("city.mp4"), (960, 540))
    changes = []
    for strength in ("adhere_1", "flex_2", "reimagine_3"):
        args = {"prompt": "sepia", "video_url": media("city.mp4"), "edit_strength": strength}
        changes.append(difference(decode(video_of(V2V, args, max_frames=1).data).frames[0], source))
    assert changes[0] < changes[1] < changes[2]
    assert changes[2] > 2 * changes[0]


def test_video_to_video_keeps_the_source_aspect_ratio() -> None:
    """A portrait source stays portrait: 720p is 720x1280, whatever aspect_ratio says."""
    portrait = video_of(T2V, {"prompt": "tall", "aspect_ratio": "9:16"}, max_frames=4)
    args = {
        "prompt": "warm",
        "video_url": "portrait.mp4",
        "resolution": "720p",
        "aspect_ratio": "16:9",
    }
    result = render(V2V, args, lambda url: portrait.data, seed=1, max_frames=4)
    clip = decode(result["video"].data)
    assert (clip.width, clip.height) == (720, 1280)


def test_video_to_video_loops_a_short_source_when_asked() -> None:
    """With v2v_short="loop", a 2 s source fills a 5 s edit by looping back to its start."""
    args = {"prompt": "cold winter", "video_url": media("beach.mp4"), "duration": "5s"}
    clip = decode(video_of(V2V, args, v2v_short="loop").data, (320, 180))
    assert len(clip.frames) == 120
    assert clip.seconds == pytest.approx(5.0, abs=0.1)
    assert difference(clip.frames[0], clip.frames[48]) < 2
    assert difference(clip.frames[0], clip.frames[24]) > 2 * difference(
        clip.frames[0], clip.frames[48]
    )


def test_video_to_video_trims_a_long_source_to_the_duration() -> None:
    """A 12 s source asked for 5 s gives exactly 5 s (v2v_long="first", the default)."""
    args = {"prompt": "sepia", "video_url": "tests/data/long_clip.mp4", "duration": "5s"}
    clip = decode(video_of(V2V, args).data)
    assert len(clip.frames) == 120
    assert (clip.width, clip.height) == (960, 540)


def test_video_to_video_refuses_sources_of_another_length_when_asked() -> None:
    """v2v_long="reject" / v2v_short="reject" refuse, naming video_url and both lengths."""
    long_args = {"prompt": "sepia", "video_url": "tests/data/long_clip.mp4", "duration": "5s"}
    with pytest.raises(RenderError, match=r"^video_url: the source is 1\d\.\d\d s long"):
        video_of(V2V, long_args, v2v_long="reject")
    short_args = {"prompt": "sepia", "video_url": media("beach.mp4"), "duration": "5s"}
    with pytest.raises(RenderError, match="duration asks for 5 s"):
        video_of(V2V, short_args, v2v_short="reject")


def test_video_to_video_keeps_a_short_source_length_when_asked() -> None:
    """v2v_short="source" renders as long as the source (Luma's native edit), not 5 s."""
    args = {"prompt": "sepia", "video_url": media("beach.mp4"), "duration": "5s"}
    clip = decode(video_of(V2V, args, v2v_short="source").data, (320, 180))
    assert 40 <= len(clip.frames) <= 56  # the 2 s source, give or take its rounding


def test_video_to_video_starts_on_the_start_image() -> None:
    """start_image_url is the first frame (scaled), dissolving into the edit in a few frames."""
    args = {
        "prompt": "noir",
        "video_url": media("beach.mp4"),
        "start_image_url": media("portrait.png"),
    }
    clip = decode(video_of(V2V, args, max_frames=14).data)
    image = first_frame(media("portrait.png"))
    crop = (image.shape[0] - image.shape[1] * 9 // 16) // 2  # cover: a centre band, 16:9
    band = image[crop : crop + image.shape[1] * 9 // 16]
    expected = av.VideoFrame.from_ndarray(np.ascontiguousarray(band), format="rgb24")
    expected_pixels = rgb(expected, (960, 540))
    assert difference(clip.frames[0], expected_pixels) < 8
    assert colourfulness(clip.frames[0]) > 40  # the colourful still, not the grey edit
    plain = decode(video_of(V2V, {**args, "start_image_url": None}, max_frames=14).data)
    # The same frame up to x264 noise (the frames before it differ, so its P-frame does).
    assert difference(clip.frames[START_FADE_FRAMES], plain.frames[START_FADE_FRAMES]) < 3


def test_max_frames_caps_only_when_given() -> None:
    """max_frames (for renderer tests) caps the frame count; without it, 5 s is 120 frames."""
    args = {"prompt": "x", "resolution": "540p"}
    assert len(decode(video_of(T2V, args, max_frames=3).data).frames) == 3
    assert len(decode(video_of(T2V, args).data).frames) == 120


def test_realistic_sizes_pad_a_playable_video() -> None:
    """realistic_sizes pads the MP4 to about the bitrate's size; it still decodes the same."""
    args = {"prompt": "x", "resolution": "720p", "duration": "5s"}
    plain = video_of(T2V, args).data
    padded = video_of(T2V, args, realistic_sizes=True).data
    assert len(padded) == REALISTIC_BITRATES[720] * 5 // 8
    assert padded.startswith(plain) and padded[len(plain) + 4 : len(plain) + 8] == b"free"
    assert len(decode(padded).frames) == 120


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size"),
    [
        (None, None, (960, 540)),
        ("9:16", "720p", (720, 1280)),
        ("1:1", "540p", (540, 540)),
        ("21:9", "540p", (1260, 540)),
    ],
)
def test_text_to_video_size_follows_aspect_ratio_and_resolution(
    aspect_ratio: str | None, resolution: str | None, size: tuple[int, int]
) -> None:
    """The short side is the resolution; the long side follows aspect_ratio (default 16:9)."""
    args = {"prompt": "ocean", "aspect_ratio": aspect_ratio, "resolution": resolution}
    clip = decode(video_of(T2V, {k: v for k, v in args.items() if v}, max_frames=3).data)
    assert (clip.width, clip.height) == size
    assert len(clip.frames) == 3
    assert clip.seconds > 0


def test_text_to_video_depends_on_prompt_and_seed_only() -> None:
    """Same prompt and seed, same pixels; another prompt or seed, another picture; it moves."""

    def frames(prompt: str, seed: int) -> list[Pixels]:
        return decode(video_of(T2V, {"prompt": prompt}, seed=seed, max_frames=12).data).frames

    base = frames("a calm ocean", 1)
    assert difference(base[0], frames("a calm ocean", 1)[0]) == 0
    assert difference(base[0], frames("a busy market", 1)[0]) > 10
    assert difference(base[0], frames("a calm ocean", 2)[0]) > 3
    assert difference(base[0], base[11]) > 1


def test_image_to_video_moves_over_the_still_and_lands_on_the_end_image() -> None:
    """i2v starts on image_url, keeps moving, and cross-fades to end_image_url by the last frame."""
    args = {
        "prompt": "push in",
        "image_url": media("skyline.jpg"),
        "end_image_url": media("portrait.png"),
        "aspect_ratio": "16:9",
    }
    clip = decode(video_of(I2V, args, max_frames=24).data)
    assert (clip.width, clip.height) == (960, 540)
    skyline, portrait = first_frame(media("skyline.jpg")), first_frame(media("portrait.png"))

    def nearer_to(picture: Pixels, target: Pixels, other: Pixels) -> bool:
        mean = picture.reshape(-1, 3).mean(axis=0)
        return bool(
            np.abs(mean - target.reshape(-1, 3).mean(axis=0)).sum()
            < np.abs(mean - other.reshape(-1, 3).mean(axis=0)).sum()
        )

    assert nearer_to(clip.frames[0], skyline, portrait)
    assert nearer_to(clip.frames[-1], portrait, skyline)
    assert difference(clip.frames[0], clip.frames[10]) > 1  # the camera moves


def test_reframe_places_the_source_at_source_position() -> None:
    """The source appears sharp inside the source_position rectangle, a blurred fill outside."""
    position = {"x_norm": 0.1, "y_norm": 0.5, "w_norm": 0.6, "h_norm": 0.3}
    args = {
        "prompt": "more beach",
        "video_url": media("beach.mp4"),
        "aspect_ratio": "1:1",
        "source_position": position,
    }
    result = render(REFRAME, args, fetch, seed=1, max_frames=2)
    assert set(result) == {"video"}
    clip = decode(result["video"].data)
    assert (clip.width, clip.height) == (540, 540)
    frame = clip.frames[0]
    x0, y0, w, h = 54, 270, 324, 162  # the fractions times 540
    inside = frame[y0 + 3 : y0 + h - 3, x0 + 3 : x0 + w - 3]
    source = first_frame(media("beach.mp4"), (w, h))[3:-3, 3:-3]
    assert difference(inside, source) < 12
    above = frame[: y0 - 20]
    assert sharpness(inside) > 3 * sharpness(above)
    assert above.mean() > 60  # painted in, not black bars


def test_reframe_without_position_centres_the_source() -> None:
    """With no source_position, a 16:9 source is fitted across the middle of a 9:16 canvas."""
    args = {"prompt": "tall", "video_url": media("beach.mp4"), "aspect_ratio": "9:16"}
    clip = decode(video_of(REFRAME, args, max_frames=2).data)
    assert (clip.width, clip.height) == (540, 960)
    top = (960 - 304) // 2  # 540 wide at 16:9 is 304 high
    inside = clip.frames[0][top + 3 : top + 301, 3:-3]
    source = first_frame(media("beach.mp4"), (540, 304))[3:-3, 3:-3]
    assert difference(inside, source) < 12
    assert clip.frames[0][: top - 10].mean() > 60


PNG, JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


@pytest.mark.parametrize(
    ("options", "magic", "file_name", "size"),
    [
        ({}, PNG, "output.png", (1024, 1024)),
        ({"aspect_ratio": "3:1", "output_format": "jpeg"}, JPEG, "output.jpg", (1024, 342)),
        ({"aspect_ratio": "9:16", "output_format": "png"}, PNG, "output.png", (576, 1024)),
    ],
)
def test_text_to_image_is_a_real_image_of_the_requested_shape(
    options: dict[str, str], magic: bytes, file_name: str, size: tuple[int, int]
) -> None:
    """uni-1 text-to-image returns one PNG (default) or JPEG, 1024 px on its long side."""
    (image,) = render(T2I, {"prompt": "a red fox", **options}, fetch, seed=3)["images"]
    assert image.data.startswith(magic)
    content_type = "image/png" if magic == PNG else "image/jpeg"
    assert (image.content_type, image.file_name) == (content_type, file_name)
    assert image.extra == {"width": size[0], "height": size[1]}
    assert first_frame_of(image.data).shape == (size[1], size[0], 3)


def test_edit_restyles_the_image_at_its_own_size() -> None:
    """uni-1 edit applies the prompt's look to image_url and keeps its dimensions."""
    result = render(
        EDIT, {"prompt": "black and white", "image_url": media("portrait.png")}, fetch, seed=3
    )
    (image,) = result["images"]
    assert image.extra == {"width": 384, "height": 512}
    edited, source = first_frame_of(image.data), first_frame(media("portrait.png"))
    assert edited.shape == source.shape
    assert colourfulness(edited) < colourfulness(source) / 3


def test_hdr_is_ten_bit_bt2020_pq() -> None:
    """hdr: true gives a 10-bit MP4 tagged BT.2020 primaries, PQ transfer, BT.2020 matrix."""
    args = {"prompt": "sunset", "video_url": media("city.mp4"), "resolution": "720p", "hdr": True}
    result = render(V2V, args, fetch, seed=1, max_frames=4)
    clip = decode(result["video"].data)
    assert (clip.width, clip.height) == (1280, 720)
    assert clip.pix_fmt == "yuv420p10le"
    assert (clip.primaries, clip.transfer, clip.colorspace) == (
        9,
        16,
        9,
    )  # bt2020, smpte2084, bt2020nc
    assert result["exr_file"] is None
    assert len(clip.frames) == 4


def test_sdr_is_eight_bit_bt709() -> None:
    """Without hdr the MP4 is 8-bit BT.709 and exr_export alone adds nothing."""
    args = {"prompt": "x", "exr_export": True}
    result = render(T2V, args, fetch, seed=1, max_frames=2)
    clip = decode(result["video"].data)
    assert (clip.pix_fmt, clip.primaries, clip.transfer, clip.colorspace) == ("yuv420p", 1, 1, 1)
    assert result["exr_file"] is None


def test_exr_export_is_a_zip_of_readable_openexr_frames() -> None:
    """exr_export with hdr adds a ZIP of OpenEXR frames at the video's size, with HDR values."""
    args = {
        "prompt": "night",
        "video_url": media("city.mp4"),
        "resolution": "720p",
        "hdr": True,
        "exr_export": True,
    }
    exr = render(V2V, args, fetch, seed=1, max_frames=5)["exr_file"]
    assert (exr.content_type, exr.file_name) == ("application/zip", "output_exr.zip")
    with zipfile.ZipFile(io.BytesIO(exr.data)) as archive:
        names = archive.namelist()
        assert names == ["frame_00000.exr", "frame_00002.exr", "frame_00004.exr"]
        for name in names:
            data = archive.read(name)
            assert data.startswith(b"\x76\x2f\x31\x01")  # OpenEXR magic
            with av.open(io.BytesIO(data), "r") as container:
                frame = next(container.decode(video=0))
                assert (container.format.name, frame.width, frame.height) == ("exr_pipe", 1280, 720)
                assert frame.format.name == "gbrpf16le"  # half floats
                # Read the planes directly: swscale would clamp the values to [0, 1].
                planes = [
                    np.frombuffer(bytes(p), np.float16).reshape(frame.height, -1)
                    for p in frame.planes
                ]
                assert max(float(p[:, : frame.width].max()) for p in planes) > 1.5  # lit windows


def test_synthetic_mode_returns_cheap_deterministic_bytes() -> None:
    """synthetic=True gives _synthetic_bytes pseudo-random bytes, fixed by seed and arguments."""
    args = {"prompt": "x", "video_url": "never-fetched", "_synthetic_bytes": 5000}

    def no_fetch(url: str) -> bytes:
        raise AssertionError("synthetic mode must not read inputs")

    def data(arguments: dict[str, Any], seed: int) -> bytes:
        video = render(V2V, arguments, no_fetch, seed=seed, synthetic=True)["video"]
        assert (video.content_type, video.file_name) == ("video/mp4", "output.mp4")
        return bytes(video.data)

    first = data(args, 1)
    assert len(first) == 5000
    assert first == data(args, 1)
    assert first != data(args, 2)
    assert first != data({**args, "prompt": "y"}, 1)
    assert len(data({"prompt": "x"}, 1)) == 262_144
    assert len(data({**args, "_synthetic_bytes": 0}, 1)) == 0


def test_other_endpoints_echo_their_arguments() -> None:
    """An endpoint without a renderer returns a summary and a JSON file of the request."""
    result = render("fal-ai/some/other-model", {"prompt": "hi", "n": 2}, fetch, seed=5)
    assert result["echo"]["keys"] == ["n", "prompt"]
    file = result["file"]
    assert (file.content_type, file.file_name) == ("application/json", "output.json")
    assert json.loads(file.data)["arguments"] == {"prompt": "hi", "n": 2}


@pytest.mark.parametrize(
    ("endpoint", "arguments", "field"),
    [
        (V2V, {"prompt": "x", "video_url": "tests/data/corrupt.mp4"}, "video_url"),
        (V2V, {"prompt": "x", "video_url": media("portrait.png")}, "video_url"),
        (
            REFRAME,
            {"prompt": "x", "video_url": media("skyline.jpg"), "aspect_ratio": "1:1"},
            "video_url",
        ),
        (EDIT, {"prompt": "x", "image_url": media("city.mp4")}, "image_url"),
        (
            I2V,
            {
                "prompt": "x",
                "image_url": media("skyline.jpg"),
                "end_image_url": "tests/data/corrupt.mp4",
            },
            "end_image_url",
        ),
        (
            V2V,
            {"prompt": "x", "video_url": media("city.mp4"), "start_image_url": media("beach.mp4")},
            "start_image_url",
        ),
    ],
)
def test_unusable_media_raise_render_error_naming_the_field(
    endpoint: str, arguments: dict[str, Any], field: str
) -> None:
    """Undecodable files and the wrong kind of media raise RenderError that names the argument."""
    with pytest.raises(RenderError, match=f"^{field}: "):
        render(endpoint, arguments, fetch, seed=1, max_frames=2)


def test_truncated_video_raises_render_error() -> None:
    """A clip cut off halfway through its bytes cannot be rendered from."""
    whole = fetch(media("city.mp4"))
    with pytest.raises(RenderError, match="^video_url: "):
        render(V2V, {"prompt": "x", "video_url": "v"}, lambda url: whole[: len(whole) // 3], seed=1)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"resolution": "huge"}, "resolution"),
        ({"duration": "forever"}, "duration"),
        ({"aspect_ratio": "wide"}, "aspect_ratio"),
        ({"source_position": {"x_norm": 0, "y_norm": 0, "w_norm": 1}}, "source_position"),
        (
            {"source_position": {"x_norm": 0, "y_norm": 0, "w_norm": True, "h_norm": 1}},
            "source_position",
        ),
    ],
)
def test_unusable_arguments_raise_render_error_naming_the_field(
    arguments: dict[str, Any], field: str
) -> None:
    """Values the renderer cannot draw are refused by name rather than crashing it."""
    args = {"prompt": "x", "video_url": media("city.mp4"), "aspect_ratio": "1:1", **arguments}
    with pytest.raises(RenderError, match=f"^{field}: "):
        render(REFRAME, args, fetch, seed=1, max_frames=2)
