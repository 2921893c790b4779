"""Media: what a file is, and the local steps that turn long footage into fal-sized segments.

Everything here is blocking (the engine runs it in worker threads), streams one frame at a
time (a 10-minute clip never sits in memory), uses PyAV (never an ffmpeg binary), keeps no
state between calls unless the caller passes a ``MediaCache`` it owns, and fails with a
``MediaError`` naming the file.

- ``probe``, ``decode_problem``: what a file holds; whether it decodes to its end.
- ``local_file``, ``content_type``, ``reference_problem``...: identities and references.
- ``detect_shots``: shot changes (PySceneDetect over PyAV).
- ``plan_segments``: pure arithmetic of how a clip is cut into 5 s / 10 s renders.
- ``cut_segment``: one segment, frame-exact, upright, constant rate, H.264, within a size.
- ``extract_frame``: one upright still (look frames, chain continuity).
- ``stitch``: the rendered segments joined back, with the source's sound.
- ``make_proxy``: an H.264/AAC copy any browser plays, for the review page.
"""

from __future__ import annotations

import typing

from .._lazy import lazy_names as _lazy_names
from ._files import (
    CONTENT_TYPES,
    IMAGE_EXTENSIONS,
    FileIdentity,
    MediaCache,
    MediaKind,
    ProbedKind,
    content_type,
    extension,
    file_identity,
    is_remote,
    local_file,
    not_a_regular_file,
    reference_problem,
)
from ._segments import (
    MAX_RATE,
    RENDER_SECONDS,
    Price,
    RenderLength,
    Segment,
    SegmentPlan,
    plan_segments,
    planning_rate,
)

if typing.TYPE_CHECKING:
    from ._cut import MAX_CRF, PreparedInfo, cut_segment
    from ._errors import MediaError
    from ._probe import MediaInfo, decode_problem, probe, probe_remote
    from ._proxy import make_proxy
    from ._shots import detect_shots
    from ._still import StillFormat, Which, extract_frame
    from ._stitch import StitchInfo, stitch

#: Names whose modules load PyAV (and numpy): imported on first use, so a run of remote
#: jobs, ``status`` and the manifest's reference checks start without them (15 MB and
#: 0.2 s on this machine).
_LAZY = {
    "MAX_CRF": "_cut",
    "PreparedInfo": "_cut",
    "cut_segment": "_cut",
    "MediaError": "_errors",
    "MediaInfo": "_probe",
    "decode_problem": "_probe",
    "probe": "_probe",
    "probe_remote": "_probe",
    "make_proxy": "_proxy",
    "detect_shots": "_shots",
    "StillFormat": "_still",
    "Which": "_still",
    "extract_frame": "_still",
    "StitchInfo": "_stitch",
    "stitch": "_stitch",
}


__getattr__, __dir__ = _lazy_names(__name__, _LAZY, globals())

__all__ = [
    "CONTENT_TYPES",
    "IMAGE_EXTENSIONS",
    "MAX_CRF",
    "MAX_RATE",
    "RENDER_SECONDS",
    "FileIdentity",
    "MediaCache",
    "MediaError",
    "MediaInfo",
    "MediaKind",
    "PreparedInfo",
    "Price",
    "ProbedKind",
    "RenderLength",
    "Segment",
    "SegmentPlan",
    "StillFormat",
    "StitchInfo",
    "Which",
    "content_type",
    "cut_segment",
    "decode_problem",
    "detect_shots",
    "extension",
    "extract_frame",
    "file_identity",
    "is_remote",
    "local_file",
    "make_proxy",
    "not_a_regular_file",
    "plan_segments",
    "planning_rate",
    "probe",
    "probe_remote",
    "reference_problem",
    "stitch",
]
