"""Look frames for ``gate: looks``: a cheap still to approve before paying for video.

Per clip, a local step extracts its first frame (one job, shared by every prompt and
take). Per clip × prompt × take, a Uni-1 edit of that frame with the prompt makes the
*look*. The render then takes the look as its ``start_image_url`` and waits, blocked in
the job graph, until a person approves the look (``raybatch review``): a look costs
$0.045, ten seconds of 1080p video $4.32 (fal's pages, see the price table).

Keys follow the graph's rule: the frame's from the clip's bytes, the look's from the
frame's key, its prompt and its take, the render's from the look's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..endpoints import EDIT_IMAGE, spec_for
from ..job import LOCAL_PREFIX, LOOK, ROLE, job_key, parent_ref
from ._cutting import START_IMAGE, edit_base
from ._types import Group, Source

if TYPE_CHECKING:
    from ..endpoints import Loc
    from ._models import JobEntry, Manifest, SourceEntry
    from ._planner import Planner

#: The local step that writes a clip's first frame as a PNG.
FRAME_ENDPOINT = "local/frame"
#: The endpoint that turns the first frame into the look (fal's Uni-1 image edit).
LOOK_ENDPOINT = EDIT_IMAGE
#: Where first frames go, inside the output directory.
FRAME_DIR = ".looks"
#: Where looks go, inside the output directory.
LOOK_DIR = "looks"


@dataclass(frozen=True, slots=True)
class Look:
    """One look frame's job: key, input and estimated cost."""

    key: str
    arguments: dict[str, Any]
    cost: float | None


@dataclass(frozen=True, slots=True)
class Frame:
    """One clip's first-frame job."""

    key: str
    arguments: dict[str, Any]
    output: str


class Looks:
    """The frame and look jobs of one expansion (frames made once per clip)."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.spec = spec_for(LOOK_ENDPOINT)
        self._prompts: dict[str, bool] = {}
        #: Keys of the frames and looks already in the plan (each is shared).
        self.added: set[str] = set()
        #: Whether a gated group was refused with a problem of its own.
        self.refused = False

    def applies(self, group: Group) -> bool:
        """Whether ``group`` is gated (its problems, if gated wrongly, go to the planner)."""
        if group.gate != "looks":
            return False
        problems = self.planner.problems
        source = group.source
        if not group.spec.takes(START_IMAGE) or source is None or source.kind != "video":
            if group.gate_loc != ("gate",):  # asked for on this entry: say why it cannot be
                self.refused = True
                problems.add(
                    group.gate_loc,
                    f"gate: looks holds video renders from a clip for an approved look;"
                    f" {group.spec.name} from {'no clip' if source is None else source.id}"
                    " is not one (set gate: none here)",
                )
            return False
        if source.file is None:
            self.refused = True
            problems.add(
                group.gate_loc,
                f"gate: looks extracts the first frame of {source.id} here, so it needs a"
                " local clip, not a URL (set gate: none on this clip)",
            )
            return False
        for layer in group.layers:
            if START_IMAGE in layer.values:
                self.refused = True
                problems.add(
                    layer.origin((START_IMAGE,)),
                    "gate: looks gives each render its look as start_image_url; remove this"
                    " or set gate: none",
                )
                return False
        return True

    def check_used(self, gate: str, any_jobs: bool) -> None:
        """A manifest's ``gate: looks`` that gates nothing is a problem of its own."""
        if gate == "looks" and any_jobs and not self.added and not self.refused:
            self.planner.problems.add(
                ("gate",),
                "gate: looks holds video-to-video renders of local clips for an approved"
                " look; this manifest has none",
            )

    def prompt_ok(self, name: str, text: str) -> bool:
        """Whether the look's endpoint takes this prompt (checked once per prompt)."""
        if name not in self._prompts:
            issues = self.spec.check_field("prompt", text)
            for issue in issues:
                self.planner.problems.add(
                    ("prompts", name), f"{issue.message} for the look frame ({self.spec.id})"
                )
            self._prompts[name] = not issues
        return self._prompts[name]

    def frame(self, source: Source) -> Frame:
        """The clip's first-frame job."""
        assert source.file is not None
        arguments = {"video_url": LOCAL_PREFIX + source.file.sha256, "at": "first"}
        key = job_key(FRAME_ENDPOINT, arguments)
        output = f"{FRAME_DIR}/{source.id}-{source.file.sha256[:12]}.png"
        return Frame(key, arguments, output)

    def look(self, frame: Frame, text: str, take: int) -> Look:
        """The look of one clip × prompt × take: a Uni-1 edit of the frame."""
        arguments = {**edit_base(), "prompt": text, "image_url": parent_ref(frame.key)}
        cost = self.planner.prices.estimate(LOOK_ENDPOINT, arguments, None)
        return Look(job_key(LOOK_ENDPOINT, arguments, take), arguments, cost)


def takes_and_gate(
    manifest: Manifest, loc: Loc, *entries: SourceEntry | JobEntry
) -> tuple[int, str, Loc]:
    """A group's takes and gate: the first of ``entries`` (a job entry, then its source)
    that says, else the manifest's; and where the gate was asked for."""
    takes = next((e.takes for e in entries if e.takes is not None), manifest.takes)
    gate = next((e.gate for e in entries if e.gate is not None), manifest.gate)
    own = entries and entries[0].gate is not None
    return takes, gate, (*loc, "gate") if own else ("gate",)


def look_path(clip: str, prompt: str | None, take: int) -> str:
    """Where a look goes: ``looks/city/noir.png``, take N ``looks/city/noir-takeN.png``
    (one look per clip × prompt × take, whatever the matrix: every variant waits for it)."""
    name = prompt or "look"
    return f"{LOOK_DIR}/{clip}/{name}" + (f"-take{take}" if take > 1 else "") + ".png"


def look_labels() -> dict[str, Any]:
    """A look's labels: its role (no matrix value: every variant shares the look)."""
    return {ROLE: LOOK}
