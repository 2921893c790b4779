"""Generate the example manifests' source media: short clips, stills and two long clips.

Run ``python manifests/media/make_media.py`` from anywhere; it rewrites ``city.mp4``,
``beach.mp4``, ``forest.mp4``, ``portrait.png`` and ``skyline.jpg`` beside this file, and
``long/harbour.mp4`` and ``long/valley.mp4``. The output is deterministic (no randomness,
single-threaded encoders), so re-running it leaves git clean. Each short clip is 320x180,
24 fps, 2 s of H.264 with strongly coloured, moving shapes, so that a restyle or a reframe
by the emulator is obvious at a glance.

The long clips (``manifests/long.yaml``) are small and low resolution on purpose:
``harbour`` is 27 s at 24 fps with sound (a soft tone with a tick at every whole second),
``valley`` 95 s at 25 fps, silent. Along their bottom edge a strip of twelve blocks shows
the frame's number (Gray-coded, one block changes per frame; :func:`read_strip` reads it
back), so that a test can tell which source moment any frame of a render or a stitch shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT, FPS, SECONDS = 320, 180, 24, 2

Image = NDArray[np.uint8]
Painter = Callable[[float, int, int], Image]


def write_clip(path: Path, frames: Iterable[Image], fps: int = FPS, crf: int = 24) -> None:
    """Encode RGB frames (all the same even size) as a small, reproducible H.264 MP4."""
    # faststart puts the index first, so a browser plays the clip while it downloads.
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = None
        for index, rgb in enumerate(frames):
            if stream is None:
                # threads=1 keeps x264's output byte-identical between runs.
                options = {"crf": str(crf), "preset": "slow", "threads": "1"}
                stream = container.add_stream("libx264", rate=fps, options=options)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        if stream is not None:
            container.mux(stream.encode())


def write_still(path: Path, rgb: Image) -> None:
    """Encode one RGB image as PNG or JPEG, chosen by the file's suffix."""
    jpeg = path.suffix.lower() in {".jpg", ".jpeg"}
    codec = av.CodecContext.create("mjpeg" if jpeg else "png", "w")
    codec.height, codec.width = rgb.shape[:2]
    codec.pix_fmt = "yuvj420p" if jpeg else "rgb24"
    if jpeg:
        codec.options = {"qscale": "3"}
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=codec.pix_fmt)
    path.write_bytes(b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)]))


def grid(width: int, height: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Normalised pixel coordinates: x and y in [0, 1), shaped (height, width)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return x / width, y / height


def vertical_gradient(
    top: tuple[int, int, int], bottom: tuple[int, int, int], y: NDArray[np.float32]
) -> NDArray[np.float32]:
    """An (h, w, 3) float image fading from ``top`` to ``bottom`` down the frame."""
    t = y[..., None]
    return (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)


def paint(
    image: NDArray[np.float32], mask: NDArray[np.bool_], colour: tuple[int, int, int]
) -> None:
    """Fill the pixels under ``mask`` with one colour, in place."""
    image[mask] = colour


def city(t: float, width: int, height: int) -> Image:
    """Night skyline: towers with lit windows that blink, a car's headlights crossing."""
    x, y = grid(width, height)
    img = vertical_gradient((10, 14, 60), (70, 40, 110), y)
    for i, (left, top) in enumerate(
        [(0.05, 0.35), (0.2, 0.2), (0.38, 0.45), (0.55, 0.15), (0.78, 0.3)]
    ):
        tower = (x >= left) & (x < left + 0.14) & (y >= top) & (y < 0.85)
        paint(img, tower, (25 + 8 * i, 25, 40))
        blink = (np.floor(x * 40) + np.floor(y * 30) + i + int(t * 6)) % 3 == 0
        window = tower & (np.floor(x * 80) % 2 == 0) & (np.floor(y * 60) % 2 == 0) & blink
        paint(img, window, (255, 220, 120))
    paint(img, y >= 0.85, (40, 40, 45))
    car_x = (t * 0.6) % 1.2 - 0.1
    paint(img, (np.abs(x - car_x) < 0.05) & (np.abs(y - 0.9) < 0.03), (220, 30, 30))
    paint(img, (np.abs(x - car_x - 0.06) < 0.012) & (np.abs(y - 0.9) < 0.012), (255, 255, 230))
    return img.astype(np.uint8)


def beach(t: float, width: int, height: int) -> Image:
    """Bright day: a rising sun, rolling waves, yellow sand and a red umbrella."""
    x, y = grid(width, height)
    img = vertical_gradient((90, 170, 240), (225, 240, 255), y / 0.5)
    sun = (x - 0.75) ** 2 + ((y - 0.25 + 0.05 * t) * height / width) ** 2 < 0.004
    paint(img, sun, (255, 230, 60))
    shore = 0.72 + 0.03 * np.sin(x * 12 + t * 4)
    sea = (y >= 0.45) & (y < shore)
    img[sea] = vertical_gradient((20, 90, 170), (40, 160, 200), (y - 0.45) / 0.3)[sea]
    crest = sea & (np.abs(np.sin(x * 30 - t * 5 + y * 40)) > 0.97)
    paint(img, crest, (240, 250, 255))
    paint(img, y >= shore, (235, 205, 130))
    umbrella = ((x - 0.25) ** 2 + ((y - 0.7) * 0.56) ** 2 < 0.006) & (y < 0.7)
    paint(img, umbrella, (230, 40, 50))
    paint(img, (np.abs(x - 0.25) < 0.005) & (y >= 0.7) & (y < 0.88), (90, 60, 30))
    return img.clip(0, 255).astype(np.uint8)


def forest(t: float, width: int, height: int) -> Image:
    """Green woods scrolling sideways, with leaves falling in front of the trunks."""
    x, y = grid(width, height)
    img = vertical_gradient((150, 210, 150), (20, 80, 30), y)
    for depth, (shade, speed) in enumerate([((40, 110, 50), 0.1), ((20, 70, 25), 0.25)]):
        sx = (x + t * speed + depth * 0.07) % 0.25
        trunk = (np.abs(sx - 0.12) < 0.012 + 0.008 * depth) & (y > 0.45)
        paint(img, trunk, (80 - 20 * depth, 50, 25))
        canopy = np.abs(sx - 0.12) < (y - 0.1 - 0.1 * depth) * 0.35
        paint(img, canopy & (y < 0.6 + 0.1 * depth), shade)
    for k in range(14):
        leaf_x = (k * 0.37 + 0.05 * np.sin(t * 3 + k)) % 1.0
        leaf_y = (k * 0.61 + t * 0.35) % 1.0
        paint(img, (np.abs(x - leaf_x) < 0.012) & (np.abs(y - leaf_y) < 0.015), (240, 150, 30))
    return img.astype(np.uint8)


def portrait(width: int = 384, height: int = 512) -> Image:
    """A stylised head and shoulders on a teal backdrop."""
    x, y = grid(width, height)
    aspect = height / width
    img = vertical_gradient((40, 150, 160), (20, 60, 90), y)
    paint(img, ((x - 0.5) ** 2 + ((y - 1.05) * aspect * 0.6) ** 2) < 0.12, (180, 40, 60))
    head = ((x - 0.5) / 0.22) ** 2 + ((y - 0.42) * aspect / 0.3) ** 2 < 1
    paint(img, head, (235, 190, 160))
    paint(img, head & (y < 0.3), (70, 40, 20))
    for eye_x in (0.42, 0.58):
        paint(img, ((x - eye_x) ** 2 + ((y - 0.4) * aspect) ** 2) < 0.0009, (30, 60, 120))
    mouth = (np.abs(x - 0.5) < 0.07) & (np.abs(y - 0.53 + 3 * (x - 0.5) ** 2) < 0.008)
    paint(img, mouth, (170, 50, 60))
    return img.astype(np.uint8)


def skyline(width: int = 512, height: int = 288) -> Image:
    """Sunset behind dark tower silhouettes, with the sun's reflection on the river."""
    x, y = grid(width, height)
    img = vertical_gradient((250, 120, 40), (120, 30, 90), y / 0.7)
    paint(img, ((x - 0.6) ** 2 + ((y - 0.55) * height / width) ** 2) < 0.01, (255, 220, 120))
    heights = 0.35 + 0.25 * np.abs(np.sin(np.floor(x * 14) * 2.3))
    paint(img, (y > heights) & (y < 0.75), (25, 15, 35))
    river = y >= 0.75
    img[river] = vertical_gradient((60, 30, 80), (20, 10, 40), (y - 0.75) / 0.25)[river]
    glint = river & (np.abs(x - 0.6) < 0.04 * (1 - (y - 0.75) * 2)) & (np.floor(y * 60) % 2 == 0)
    paint(img, glint, (255, 200, 100))
    return img.astype(np.uint8)


#: Blocks in a long clip's frame-number strip, and the strip's share of the picture height.
STRIP_BITS, STRIP_SHARE = 12, 1 / 6
LONG_SIZE = (160, 90)
SAMPLE_RATE = 22_050


def strip(image: Image, index: int) -> Image:
    """``image`` with frame number ``index`` as a strip of light and dark blocks at the bottom."""
    height, width = image.shape[:2]
    top = height - round(height * STRIP_SHARE)
    code = index ^ (index >> 1)
    for bit in range(STRIP_BITS):
        left, right = bit * width // STRIP_BITS, (bit + 1) * width // STRIP_BITS
        image[top:, left:right] = 230 if code >> bit & 1 else 25
    return image


def read_strip(image: Image) -> int:
    """The frame number an upright RGB picture (any size) shows in its strip."""
    height, width = image.shape[:2]
    y = height - round(height * STRIP_SHARE) // 2 - 1
    luma = image.mean(axis=2)
    code = 0
    for bit in range(STRIP_BITS):
        if luma[y, (2 * bit + 1) * width // (2 * STRIP_BITS)] > 128:
            code |= 1 << bit
    index = 0
    while code:
        index ^= code
        code >>= 1
    return index


def metronome(seconds: float, rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """A soft 220 Hz tone with a 20 ms full-scale tick at every whole second."""
    count = round(seconds * rate)
    signal = 0.08 * np.sin(2 * np.pi * 220 * np.arange(count) / rate)
    for second in range(int(seconds) + 1):
        start = second * rate
        signal[start : start + rate // 50] = 0.9 * np.sign(
            np.sin(2 * np.pi * 1000 * np.arange(len(signal[start : start + rate // 50])) / rate)
        )
    return signal.astype(np.float32)


def harbour(t: float, width: int, height: int) -> Image:
    """Dusk over a harbour: the sky darkens, a boat crosses, the water shimmers slowly."""
    x, y = grid(width, height)
    dusk = min(1.0, t / 27)
    img = vertical_gradient(
        (int(90 - 60 * dusk), int(150 - 90 * dusk), int(220 - 80 * dusk)),
        (int(250 - 60 * dusk), int(190 - 80 * dusk), int(120 - 40 * dusk)),
        y / 0.6,
    )
    water = y >= 0.6
    img[water] = vertical_gradient((30, 70, 120), (10, 30, 60), (y - 0.6) / 0.4)[water]
    band = water & (np.abs(np.sin(x * 9 + y * 30 + t * 0.8)) > 0.96)
    paint(img, band, (200, 210, 230))
    boat_x = 0.1 + 0.8 * (t / 27)
    paint(img, (np.abs(x - boat_x) < 0.06) & (np.abs(y - 0.6) < 0.03), (120, 40, 30))
    paint(img, (np.abs(x - boat_x) < 0.005) & (y > 0.42) & (y < 0.6), (60, 40, 30))
    return img.clip(0, 255).astype(np.uint8)


def valley(t: float, width: int, height: int) -> Image:
    """A long pan over green hills under a passing sun; a shot change every 20 s."""
    x, y = grid(width, height)
    shot = int(t // 20)
    palettes = [((120, 180, 240), (40, 120, 50)), ((250, 120, 60), (110, 40, 90))]
    sky, land = palettes[shot % 2]
    img = vertical_gradient(sky, (235, 235, 220), y / 0.55)
    pan = t * 0.02
    for depth in range(2):
        ridge = 0.55 + 0.08 * depth + 0.06 * np.sin((x + pan * (depth + 1)) * (5 + 3 * depth))
        shade = tuple(int(c * (0.8 - 0.25 * depth)) for c in land)
        paint(img, y > ridge, shade)  # type: ignore[arg-type]
    sun_x = (0.1 + (t % 20) / 25) % 1.0
    paint(img, (x - sun_x) ** 2 + ((y - 0.2) * height / width) ** 2 < 0.002, (255, 240, 170))
    return img.clip(0, 255).astype(np.uint8)


def write_long_clip(path: Path, painter: Painter, seconds: int, fps: int, *, sound: bool) -> None:
    """A long, small clip: ``painter``'s scene with the frame-number strip, and optionally
    the metronome as AAC (mono)."""
    width, height = LONG_SIZE
    options = {"crf": "32", "preset": "slow", "threads": "1", "g": str(fps * 5)}
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=fps, options=options)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = None
        if sound:
            audio = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
            audio.bit_rate = 24_000
        for index in range(seconds * fps):
            rgb = strip(painter(index / fps, width, height), index)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            signal = metronome(seconds)
            chunk = 1024
            for start in range(0, len(signal), chunk):
                samples = signal[None, start : start + chunk]
                sound_frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                sound_frame.sample_rate = SAMPLE_RATE
                sound_frame.pts = start
                out.mux(audio.encode(sound_frame))
            out.mux(audio.encode())


def clip_frames(painter: Painter, width: int = WIDTH, height: int = HEIGHT) -> Iterable[Image]:
    """The frames of a 2 s clip drawn by ``painter`` at 24 fps."""
    return (painter(i / FPS, width, height) for i in range(FPS * SECONDS))


def main() -> None:
    """Write every demo source file beside this script."""
    for name, painter in {"city": city, "beach": beach, "forest": forest}.items():
        write_clip(HERE / f"{name}.mp4", clip_frames(painter))
    write_still(HERE / "portrait.png", portrait())
    write_still(HERE / "skyline.jpg", skyline())
    (HERE / "long").mkdir(exist_ok=True)
    write_long_clip(HERE / "long" / "harbour.mp4", harbour, 27, 24, sound=True)
    write_long_clip(HERE / "long" / "valley.mp4", valley, 95, 25, sound=False)
    for path in sorted([*HERE.glob("*.*"), *HERE.glob("long/*.*")]):
        if path.suffix != ".py":
            print(f"{path.relative_to(HERE)!s:18} {path.stat().st_size:>8,} bytes")


if __name__ == "__main__":
    main()
