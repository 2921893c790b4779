"""An editor's timeline of a delivery, as OpenTimelineIO (``.otio``).

The sources are laid end to end on a ``source`` track, each at its own frame rate for
its whole length. Every restyled shot takes its source's place and time range on a
track of its own look (one per prompt and matrix values; further takes of the same shot
on tracks after it), so in an NLE each variant sits above the footage it replaces. Media
references are ``file://`` URLs of the delivered files (an editor relinks them if the
folder moves); each clip carries raybatch's key, take and sha256 in its metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import opentimelineio as otio

from ..media import MediaError, probe

#: The rate a length is counted in when the media does not say.
DEFAULT_RATE = 24.0


@dataclass(frozen=True)
class Shot:
    """A delivered file that stands for its source clip on the timeline."""

    clip: str
    variant: str  # prompt and matrix values: names the track
    take: int
    file: Path
    file_duration: float | None
    source: Path | None  # the local source, when there is one
    source_url: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Span:
    """A length counted in frames of a rate."""

    frames: int
    rate: float

    def range(self, frames: int | None = None) -> otio.opentime.TimeRange:
        return otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, self.rate),
            otio.opentime.RationalTime(self.frames if frames is None else frames, self.rate),
        )


def write_timeline(
    path: Path,
    name: str,
    shots: Sequence[Shot],
    write: Callable[[Path, Callable[[BinaryIO], object]], None],
) -> Path:
    """Write the timeline of ``shots`` to ``path`` with ``write`` (an atomic writer);
    returns it."""
    order: list[str] = []
    by_clip: dict[str, list[Shot]] = {}
    variants: list[str] = []
    for shot in shots:
        if shot.clip not in by_clip:
            order.append(shot.clip)
        by_clip.setdefault(shot.clip, []).append(shot)
        if shot.variant not in variants:
            variants.append(shot.variant)
    spans = {clip: _source_span(by_clip[clip][0]) for clip in order}
    timeline = otio.schema.Timeline(name=f"{name} (raybatch)")
    timeline.tracks.append(_source_track(order, by_clip, spans))
    for variant in variants:
        rank = 0
        while True:
            track = _variant_track(variant, rank, order, by_clip, spans)
            if track is None:
                break
            timeline.tracks.append(track)
            rank += 1
    text = otio.adapters.write_to_string(timeline, adapter_name="otio_json")
    write(path, lambda handle: handle.write(text.encode()))
    return path


def _source_span(shot: Shot) -> _Span:
    """How long the shot's source is, in its frames (the delivered file's if unknown)."""
    for media in (shot.source, shot.file):
        if media is None:
            continue
        try:
            info = probe(media)
        except MediaError:
            continue
        rate = info.fps or DEFAULT_RATE
        if info.frames:
            return _Span(info.frames, rate)
        if info.duration:
            return _Span(round(info.duration * rate), rate)
    return _Span(0, DEFAULT_RATE)


def _reference(url: str, available: otio.opentime.TimeRange | None) -> Any:
    return otio.schema.ExternalReference(target_url=url, available_range=available)


def _source_track(
    order: Sequence[str], by_clip: Mapping[str, Sequence[Shot]], spans: Mapping[str, _Span]
) -> Any:
    track = otio.schema.Track(name="source", kind=otio.schema.TrackKind.Video)
    for clip in order:
        shot = by_clip[clip][0]
        url = shot.source.absolute().as_uri() if shot.source else shot.source_url or ""
        span = spans[clip]
        track.append(
            otio.schema.Clip(
                name=clip, media_reference=_reference(url, span.range()), source_range=span.range()
            )
        )
    return track


def _variant_track(
    variant: str,
    rank: int,
    order: Sequence[str],
    by_clip: Mapping[str, Sequence[Shot]],
    spans: Mapping[str, _Span],
) -> Any:
    """The track of ``variant``'s ``rank``-th take of each source (None: no source has
    that many); a source without one leaves a gap of its length."""
    track = otio.schema.Track(
        name=variant if rank == 0 else f"{variant} (alt {rank + 1})",
        kind=otio.schema.TrackKind.Video,
    )
    found = False
    for clip in order:
        span = spans[clip]
        takes = sorted((s for s in by_clip[clip] if s.variant == variant), key=lambda s: s.take)
        if rank >= len(takes):
            track.append(otio.schema.Gap(source_range=span.range()))
            continue
        found = True
        shot = takes[rank]
        file_frames = round((shot.file_duration or 0) * span.rate) or span.frames
        frames = min(span.frames, file_frames)
        restyled = otio.schema.Clip(
            name=shot.file.name,
            media_reference=_reference(shot.file.absolute().as_uri(), span.range(file_frames)),
            source_range=span.range(frames),
            metadata={"raybatch": dict(shot.metadata)},
        )
        track.append(restyled)
        if frames < span.frames:  # a render shorter than its source: the rest stays empty
            track.append(otio.schema.Gap(source_range=span.range(span.frames - frames)))
    return track if found else None
