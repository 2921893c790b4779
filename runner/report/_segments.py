"""What ``plan`` says of long clips: how each is cut into renders, what that costs and why
(a clip shorter than one render is warned of with the clips' other warnings: billed up)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..plan import SegmentedClip


def segments_summary(clips: Sequence[SegmentedClip]) -> list[dict[str, Any]]:
    """Each clip's cutting as ``plan --json`` shows it."""
    return [dataclasses.asdict(clip) for clip in clips]


def format_segments(clips: Sequence[dict[str, Any]]) -> list[str]:
    """``plan``'s lines about long clips, cut into renders."""
    long = [clip for clip in clips if len(clip["spans"]) > 1]
    lines = ["long clips, cut into renders and stitched back:"] if long else []
    for clip in long:
        spans = clip["spans"]
        lengths = "+".join(f"{seconds}s" for _, _, seconds in spans)
        seams = ", ".join(f"{seam:.2f}" for seam in clip["seams"])
        lines.append(
            f"  {clip['clip']}  {clip['path']}  {clip['duration']:.2f} s at {clip['rate']} fps:"
            f" {len(spans)} renders ({lengths}), seams at {seams} s"
        )
        lines.append(f"      {clip['settings']}")
        shown = ", ".join(f"{start:.2f}–{end:.2f}" for start, end, _ in spans)
        lines.append(f"      renders of the source {shown} s")
        lines.append(f"      {_costs(clip)}")
        lines += [f"      · {note}" for note in clip["notes"]]
    return lines


def _costs(clip: dict[str, Any]) -> str:
    outputs = clip["outputs"]
    if clip["renders_usd"] is None or clip["looks_usd"] is None or clip["usd"] is None:
        return f"{outputs} stitched output(s); some of their jobs have no price"
    each = clip["renders_usd"] + clip["looks_usd"]
    looks = f" + look and start frames ${clip['looks_usd']:.3f}" if clip["looks_usd"] else ""
    return (
        f"each stitched output: renders ${clip['renders_usd']:.2f}{looks} = ${each:.3f};"
        f" {outputs} output(s), shared jobs once: ${clip['usd']:.2f}"
    )
