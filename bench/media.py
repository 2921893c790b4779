"""``python -m bench.media``: the media layer's figures (issue 12), run by hand.

Three phases, each on sources generated once into a cache directory outside the
repository (``--cache``, default ``$XDG_CACHE_HOME/raybatch-bench-media``):

1. ``stitch``: a 3-minute 1080p clip from 18 rendered 10 s segments (24 fps H.264 at
   10 Mbit/s, as a Ray render is delivered, plus the source's AAC sound). Timed twice:
   as planned (every segment whole: packets copied) and with the last segment overlapping
   (trimmed: the whole clip decoded and re-encoded, which is also what a user's ffmpeg
   concat with re-encoding costs; no ffmpeg binary exists here to time it directly).
2. ``upload``: a 60 s 4K ProRes 422 master prepared for a 1080p render: the bytes of its
   six prepared segments against the master's.
3. ``memory``: a 10-minute 1080p clip with sound, in a child process: every segment
   prepared at 540p (with a 12-frame overlap at each seam), then stitched twice from those
   segments (trimmed, then blended: both re-encode, the blend reads two files at once).
   Peak RSS (the child's VmHWM) minus its RSS before the work.

Writes ``<out>/media.json`` and ``<out>/media.md`` (default ``bench/results``;
``media-dense.*`` with ``--scene dense``); prints the table. ``--quick`` uses tiny sources
(a harness check, not figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from runner.media import Segment, cut_segment, plan_segments, probe, stitch

from .procs import ROOT, measure, python
from .run import machine

RATE = 24
MB = 1_000_000
#: fal's size limit for a video-to-video source (runner/endpoints/limits.py).
FAL_MAX_BYTES = 200 * MB
PHASES = ("stitch", "upload", "memory")


def build_parser() -> argparse.ArgumentParser:
    """The bench's options."""
    p = argparse.ArgumentParser(prog="python -m bench.media", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sources: checks the harness only")
    p.add_argument("--only", action="append", choices=PHASES, help="run only these phases")
    p.add_argument("--cache", type=Path, help="where generated sources are kept")
    p.add_argument(
        "--scene",
        choices=["natural", "dense"],
        default="natural",
        help="generated footage: natural (default) or dense texture everywhere (worst case)",
    )
    p.add_argument("--out", type=Path, help="where media.json/media.md go (bench/results)")
    p.add_argument("--child", choices=["memory"], help=argparse.SUPPRESS)
    p.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return p


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"stitch": (320, 180, 3), "upload": (640, 360, 3), "memory": (320, 180, 30)}
    # (width, height, seconds or segments)
    return {"stitch": (1920, 1080, 18), "upload": (3840, 2160, 60), "memory": (1920, 1080, 600)}


# ---------------------------------------------------------------- generated sources


class _Scene:
    """Camera-like footage: a textured world panned across, with shapes and sensor grain.

    Real footage compresses because neighbouring pixels and frames resemble each other;
    per-pixel random noise would make every encoder look hopeless and every ratio
    meaningless, so texture here is smooth noise over several octaves, with hard-edged
    shapes for detail, a slow pan for motion and a grain that changes every frame.

    ``natural``: amplitude falls as 1/f from the frame's scale down to the pixel's, as in
    photographs (most contrast in large shapes), 200 shapes, grain of 1 code value.
    ``dense``: texture as strong at 2 pixels as at 64 (foliage, gravel, crowds everywhere),
    40 shapes, grain of 1.5: the worst case for every encoder, ProRes included.
    """

    _GRAINS = 6

    def __init__(self, width: int, height: int, scene: str = "natural", seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        self.margin_x, self.margin_y = width // 4, height // 8
        world_w, world_h = width + self.margin_x, height + self.margin_y
        if scene == "natural":
            octaves = range(1, 8)
            weights = [2.0**octave for octave in octaves]
            norm = 1.1 / float(np.sqrt(sum(w * w for w in weights)))
            weights = [w * norm for w in weights]
            shapes, grain = 80, 1.0
        else:
            octaves = range(1, 6)
            weights = [0.2 * 1.5**octave for octave in octaves]
            shapes, grain = 40, 1.5
        world = np.zeros((world_h, world_w, 3), np.float32)
        for octave, weight in zip(octaves, weights, strict=True):
            grey = rng.normal(0, 1, (max(2, world_h >> octave), max(2, world_w >> octave), 1))
            tint = rng.normal(0, 0.15, grey.shape[:2] + (3,))
            layer = av.VideoFrame.from_ndarray(
                np.clip((grey + tint) * 40 + 128, 0, 255).astype(np.uint8), format="rgb24"
            ).reformat(world_w, world_h, interpolation="BICUBIC")
            world += (layer.to_ndarray().astype(np.float32) - 128) * weight
        world += np.array([110, 100, 90], np.float32)
        for _ in range(shapes):  # hard edges: boxes of flat colour
            x, y = int(rng.integers(0, world_w)), int(rng.integers(0, world_h))
            w = int(rng.integers(width // 60, width // 8))
            h = int(rng.integers(height // 60, height // 8))
            world[y : y + h, x : x + w] = rng.integers(20, 235, 3)
        self.world = np.clip(world, 0, 255).astype(np.uint8)
        self.grains = [
            rng.normal(0, grain, (height, width, 1)).round().astype(np.int16)
            for _ in range(self._GRAINS)
        ]

    def frame(self, index: int, fmt: str) -> av.VideoFrame:
        """Frame ``index``: the pan's window over the world, grained, as ``fmt``."""
        swing = index % 480
        step = swing if swing < 240 else 480 - swing
        x = step * self.margin_x // 240
        y = step * self.margin_y // 240
        window = self.world[y : y + self.height, x : x + self.width].astype(np.int16)
        image = np.clip(window + self.grains[index % self._GRAINS], 0, 255).astype(np.uint8)
        return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=fmt)


def _write_video(
    path: Path,
    seconds: float,
    width: int,
    height: int,
    *,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    bit_rate: int | None = None,
    sound: bool = False,
    scene: str = "natural",
) -> Path:
    """A ``seconds`` long clip at 24 fps; written to a temporary name, then renamed."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "yuv422p10le" if codec == "prores_ks" else "yuv420p"
    # Drawing a 4K frame costs more than encoding it: a second or two of frames is drawn
    # once and played forwards and backwards (a smooth pan, never a jump).
    loop = 24 if width > 1920 else 48
    world = _Scene(width, height, scene)
    drawn = [world.frame(index, fmt) for index in range(loop)]
    del world
    partial = path.with_name(path.name + ".part")
    container = "mov" if path.suffix == ".mov" else "mp4"
    with av.open(str(partial), "w", format=container) as out:
        video = out.add_stream(codec, rate=RATE, options=options or {})
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, fmt
        if bit_rate:
            video.bit_rate = bit_rate
        audio = out.add_stream("aac", rate=48_000, layout="stereo") if sound else None
        frames = round(seconds * RATE)
        samples = _tone(seconds) if audio is not None else iter(())
        for index in range(frames):
            turn = index % (2 * loop)
            picture = drawn[turn if turn < loop else 2 * loop - 1 - turn]
            picture.pts = index
            out.mux(video.encode(picture))
            if audio is not None and index % RATE == 0:
                out.mux(audio.encode(next(samples, None)))
        out.mux(video.encode())
        if audio is not None:
            for frame in samples:
                out.mux(audio.encode(frame))
            out.mux(audio.encode())
    os.replace(partial, path)
    return path


def _tone(seconds: float) -> Iterator[av.AudioFrame]:
    """One-second frames of a quiet stereo tone."""
    for second in range(int(np.ceil(seconds))):
        t = np.arange(48_000, dtype=np.float32) / 48_000 + second
        wave = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate = 48_000
        frame.pts = second * 48_000
        yield frame


def _renders(cache: Path, width: int, height: int, count: int, scene: str) -> list[Path]:
    """``count`` 10 s renders as Ray delivers them: 24 fps H.264, silent, 10 Mbit/s."""
    return [
        _write_video(
            cache / f"render-{width}x{height}-{index:02}.mp4",
            10.0,
            width,
            height,
            options={"preset": "veryfast"},
            bit_rate=10 * MB,
            scene=scene,
        )
        for index in range(count)
    ]


# ---------------------------------------------------------------- phases


def _timed_stitch(parts: list[tuple[Path, Segment]], dest: Path, audio: Path) -> dict[str, Any]:
    started, cpu = time.monotonic(), time.process_time()
    info = stitch(parts, dest, audio_from=audio)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    dest.unlink()
    return {
        "seconds": round(seconds, 3),
        # CPU of every thread of this process: what other load on the machine cannot move.
        "cpu_seconds": round(cpu, 3),
        "realtime_factor": round(info.duration / seconds, 1),
        "reencoded": info.reencoded,
        "audio": info.audio,
        "frames": info.frames,
    }


def stitch_phase(cache: Path, work: Path, quick: bool, scene: str) -> dict[str, Any]:
    """18 renders of 10 s stitched with the source's sound: copied, and trimmed."""
    width, height, count = _sizes(quick)["stitch"]
    renders = _renders(cache, width, height, count, scene)
    length = 10.0 * count
    sound = _write_video(cache / f"sound-{length:g}s.mp4", length, 160, 90, sound=True)
    exact = plan_segments(length, RATE, length="10s")
    trimmed = plan_segments(length - 5, RATE, length="10s")
    assert len(exact.segments) == len(trimmed.segments) == count
    result: dict[str, Any] = {
        "clip_seconds": length,
        "segments": count,
        "size": f"{width}x{height}",
    }
    result["render_bytes"] = sum(path.stat().st_size for path in renders)
    copy = [_timed_stitch(list(zip(renders, exact.segments, strict=True)), work / "c.mp4", sound)]
    copy += [_timed_stitch(list(zip(renders, exact.segments, strict=True)), work / "c.mp4", sound)]
    result["copied"] = min(copy, key=lambda run: run["seconds"])
    result["reencoded"] = _timed_stitch(
        list(zip(renders, trimmed.segments, strict=True)), work / "r.mp4", sound
    )
    return result


def upload_phase(cache: Path, work: Path, quick: bool, scene: str) -> dict[str, Any]:
    """A 4K ProRes master prepared for a 1080p render: bytes uploaded against the master's."""
    width, height, seconds = _sizes(quick)["upload"]
    master = _write_video(
        cache / f"master-{width}x{height}-{seconds}s.mov",
        seconds,
        width,
        height,
        codec="prores_ks",
        options={"profile": "2"},  # ProRes 422 (not HQ): the smaller master, the harder test
        scene=scene,
    )
    plan = plan_segments(seconds, RATE, length="10s")
    started = time.monotonic()
    prepared: list[dict[str, Any]] = []
    for segment in plan.segments:
        info = cut_segment(
            master,
            segment,
            work / f"up-{segment.index}.mp4",
            max_height=1080,
            max_bytes=FAL_MAX_BYTES,
        )
        prepared.append(
            {"bytes": info.size, "crf": info.crf, "size": f"{info.width}x{info.height}"}
        )
        info.path.unlink()
    elapsed = time.monotonic() - started
    total = sum(item["bytes"] for item in prepared)
    source = master.stat().st_size
    return {
        "master": f"{width}x{height} ProRes 422, {seconds} s, {RATE} fps",
        "master_bytes": source,
        "uploaded_bytes": total,
        "ratio": round(total / source, 4),
        "segments": prepared,
        "prepare_seconds": round(elapsed, 1),
        "prepare_realtime_factor": round(seconds / elapsed, 2),
    }


def memory_phase(cache: Path, work: Path, quick: bool, scene: str) -> dict[str, Any]:
    """Prepare and stitch a 10-minute clip in a child; its RSS growth over its start."""
    width, height, seconds = _sizes(quick)["memory"]
    source = _write_video(
        cache / f"long-{width}x{height}-{seconds}s.mp4",
        seconds,
        width,
        height,
        options={"preset": "veryfast"},
        bit_rate=8 * MB,
        sound=True,
        scene=scene,
    )
    report = work / "memory.json"
    measured = measure(
        python(
            "-m", "bench.media", "--child", "memory", "--source", str(source), "--work", str(work)
        ),
        cwd=ROOT,
        log=work / "memory.log",
        timeout=7200,
    )
    if measured.returncode != 0:
        raise RuntimeError(f"the memory child failed: see {work / 'memory.log'}")
    child: dict[str, Any] = json.loads(report.read_text())
    # Not os.wait4's ru_maxrss: Linux carries the parent's high-water mark over fork and
    # exec, and the parent holds the generated footage. VmHWM counts from the exec.
    child["rss_growth_mb"] = round(child["peak_rss_mb"] - child["rss_before_mb"], 1)
    child["wait4_maxrss_mb"] = round(measured.maxrss_mb, 1)
    child["clip"] = f"{width}x{height}, {seconds} s, H.264 8 Mbit/s + AAC"
    return child


def _status_mb(field: str) -> float:
    """A size from /proc/self/status (VmRSS now, VmHWM the peak since exec), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / MB
    raise KeyError(field)


def memory_child(source: Path, work: Path) -> int:
    """The memory phase's measured work: prepare every segment, stitch them twice."""
    info = probe(source)
    assert info.duration is not None and info.fps is not None
    before = _status_mb("VmRSS")
    started = time.monotonic()
    plan = plan_segments(info.duration, info.fps, length="10s", overlap_frames=12)
    parts = []
    for segment in plan.segments:
        prepared = cut_segment(
            source, segment, work / f"seg-{segment.index:03}.mp4", max_height=540
        )
        parts.append((prepared.path, segment))
    prepared_at = time.monotonic()
    trimmed = stitch(parts, work / "trimmed.mp4", audio_from=source)
    trimmed_at = time.monotonic()
    blended = stitch(parts, work / "blended.mp4", audio_from=source, blend_overlaps=True)
    done = time.monotonic()
    figures = {
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "segments": len(plan.segments),
        "prepare_seconds": round(prepared_at - started, 1),
        "stitch_trimmed_seconds": round(trimmed_at - prepared_at, 1),
        "stitch_blended_seconds": round(done - trimmed_at, 1),
        "stitched_frames": [trimmed.frames, blended.frames],
        "stitched_duration_error_frames": round(abs(trimmed.duration - info.duration) * RATE, 3),
    }
    (work / "memory.json").write_text(json.dumps(figures))
    return 0


# ---------------------------------------------------------------- report


def markdown(figures: dict[str, Any]) -> str:
    """The figures as a short markdown report, with the issue's targets."""
    lines = [
        f"Media bench of {figures['date']} on {figures['machine']['nproc']} cores,"
        f" {figures['scene']} generated footage",
        "",
    ]
    lines += ["| figure | value | target | met |", "|---|---:|---:|:---:|"]
    stitched = figures.get("stitch")
    if stitched:
        copied, redone = stitched["copied"], stitched["reencoded"]
        lines.append(
            f"| stitch, {stitched['segments']} × 10 s {stitched['size']}, packets copied"
            f" ({copied['seconds']} s) | {copied['realtime_factor']}× real time | ≥ 50× |"
            f" {'yes' if copied['realtime_factor'] >= 50 and not copied['reencoded'] else 'no'} |"
        )
        cpu = f", {redone['cpu_seconds']} CPU s" if "cpu_seconds" in redone else ""
        lines.append(
            f"| stitch, same, last segment trimmed: re-encoded ({redone['seconds']} s{cpu})"
            f" | {redone['realtime_factor']}× real time | – | |"
        )
    upload = figures.get("upload")
    if upload:
        lines.append(
            f"| upload bytes, {upload['master']} → 1080p | {upload['uploaded_bytes'] / MB:.1f} MB"
            f" of {upload['master_bytes'] / MB:.0f} MB = {upload['ratio']} | ≤ 0.1 |"
            f" {'yes' if upload['ratio'] <= 0.1 else 'no'} |"
        )
        lines.append(
            f"| preparing that master ({upload['prepare_seconds']} s) |"
            f" {upload['prepare_realtime_factor']}× real time | – | |"
        )
    memory = figures.get("memory")
    if memory:
        lines.append(
            f"| peak RSS growth, prepare {memory['segments']} segments at 540p + 2 stitches of a"
            f" {memory['clip']} | {memory['rss_growth_mb']} MB (peak {memory['peak_rss_mb']} MB)"
            f" | ≤ 200 MB | {'yes' if memory['rss_growth_mb'] <= 200 else 'no'} |"
        )
        lines.append(
            f"| … its times: prepare {memory['prepare_seconds']} s, stitch trimmed"
            f" {memory['stitch_trimmed_seconds']} s, blended {memory['stitch_blended_seconds']} s"
            " | | | |"
        )
    earlier: dict[str, list[str]] = {}
    for phase in PHASES:
        measured = figures.get(phase, {}).get("measured", figures["date"])
        if measured != figures["date"]:
            earlier.setdefault(measured, []).append(phase)
    for measured, names in earlier.items():
        lines += ["", f"{', '.join(names)}: figures of {measured}, not run again on this date."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.media``."""
    args = build_parser().parse_args(argv)
    if args.child == "memory":
        return memory_child(args.source, args.work)
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache: Path = args.cache or home / "raybatch-bench-media" / ("quick" if args.quick else "full")
    cache = cache / args.scene
    out: Path = args.out or ROOT / "bench" / "results" / ("quick" if args.quick else "")
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "quick": args.quick,
        "scene": args.scene,
    }
    name = "media" if args.scene == "natural" else f"media-{args.scene}"
    previous = out / f"{name}.json"
    if args.only and previous.exists():
        # The phases not run keep their last figures, each with the date it was measured.
        kept = json.loads(previous.read_text())
        for phase in PHASES:
            if phase not in args.only and phase in kept:
                figures[phase] = {"measured": kept["date"], **kept[phase]}
    phases = {"stitch": stitch_phase, "upload": upload_phase, "memory": memory_phase}
    for phase in args.only or PHASES:
        started = time.monotonic()
        figures[phase] = phases[phase](cache, work, args.quick, args.scene)
        figures[phase]["measured"] = figures["date"]
        print(
            f"[bench.media] {phase} ({time.monotonic() - started:.0f} s): {figures[phase]}",
            file=sys.stderr,
        )
    table = markdown(figures)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    (out / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
