"""The local steps raybatch ships, by endpoint: what a run does when a plan names one.

``local/frame``: a clip's first frame as an upright PNG (``gate: looks`` starts each look
from it). PyAV only, no ffmpeg binary; the picture keeps the clip's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

import av
import numpy as np
from av.video.frame import VideoFrame

from ..errors import LocalStepFailed
from ..job import LOCAL_PREFIX
from ._local import LocalJob, LocalStep


def first_frame(job: LocalJob) -> None:
    """Write the first decodable frame of ``video_url`` (a local clip) to ``job.output``."""
    reference = job.arguments.get("video_url")
    local = None
    if isinstance(reference, str) and reference.startswith(LOCAL_PREFIX):
        local = job.spec.files.get(reference.removeprefix(LOCAL_PREFIX))
    if local is None:
        raise LocalStepFailed(f"local/frame needs a local clip, not {reference!r}")
    with av.open(str(local.path)) as container:
        if not container.streams.video:
            raise LocalStepFailed(f"{local.path.name}: no video stream")
        stream = container.streams.video[0]
        frame = next(container.decode(stream), None)
        if frame is None:
            raise LocalStepFailed(f"{local.path.name}: no frame could be decoded")
        picture = _upright(frame)
    encoder = av.CodecContext.create("png", "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width, encoder.height, encoder.pix_fmt = picture.width, picture.height, "rgb24"
    encoder.time_base = Fraction(1, 25)
    picture.pts = 0
    data = b"".join(bytes(p) for p in [*encoder.encode(picture), *encoder.encode(None)])
    job.output.write_bytes(data)


def _upright(frame: VideoFrame) -> VideoFrame:
    """The frame as RGB, turned as its display matrix says (phone footage is often
    stored sideways). FFmpeg's angle is counterclockwise; ``rot90`` turns that way too."""
    rgb = frame.reformat(format="rgb24")
    turns = int(round(frame.rotation / 90)) % 4
    if not turns:
        return rgb
    turned = np.ascontiguousarray(np.rot90(rgb.to_ndarray(), turns), np.uint8)
    return VideoFrame.from_ndarray(turned, format="rgb24")


#: Every local step a plan may name.
STEPS: Mapping[str, LocalStep] = {"local/frame": first_frame}
