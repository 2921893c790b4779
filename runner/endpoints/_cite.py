"""Where each fact about fal's and Luma's endpoints comes from, and when the source said it.

Every price row, limit and rule in this package names one of these. ``date`` is the date the
source carries (a commit, a document's own date) or, for a live page that carries none, the
day it was read for this table; a fact kept from the project's research notes without being
read again says so ("undated; ...").
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Cite:
    """A source precise enough to find again, and the date it said what we use."""

    source: str
    date: str

    def __str__(self) -> str:
        return f"{self.source}, {self.date}"


#: The day fal's model pages (their llms.txt) were read again for this table.
READ = "2026-12-04"
_PAGE = "fal.ai/models/luma/agent/{}/llms.txt"

FAL_V2V = Cite(_PAGE.format("ray/v3.2/video-to-video"), READ)
FAL_I2V = Cite(_PAGE.format("ray/v3.2/image-to-video"), READ)
FAL_REFRAME = Cite(_PAGE.format("ray/v3.2/reframe"), READ)
FAL_T2V = Cite("fal.ai/models/luma/agent/ray/v3.2/text-to-video/api (no price card)", READ)
FAL_UNI_T2I = Cite(_PAGE.format("uni-1/v1/text-to-image"), READ)
FAL_UNI_EDIT = Cite(_PAGE.format("uni-1/v1/edit"), READ)
#: fal's published endpoint types (the OpenAPI-generated TypeScript of @fal-ai/client).
FAL_TYPES = Cite(
    "fal's published types: github.com/fal-ai/fal-js libs/client/src/types/endpoints.ts"
    " (commit 381105e, 'update endpoints types')",
    "2026-08-02",
)
LUMA_SDK = Cite("github.com/lumalabs/luma-agents-python v0.3.0 src/luma_agents/types", "2026-06-09")
LUMA_REFRAME_DOCS = Cite("docs.agents.lumalabs.ai/guides/videos/reframing/", READ)
LUMA_PRICING = Cite("docs.agents.lumalabs.ai/guides/pricing/ (generation prices)", READ)
#: A third-party audit that says its facts come from Luma's own documentation.
SKILL = Cite(
    "github.com/calesthio/generative-media-skills luma-ray-video/SKILL.md (from Luma's docs)",
    "2026-07-10",
)
#: The upload widget of fal's Ray 2 modify page, recorded in the project's notes.
FAL_R2_MODIFY = Cite(
    "fal.ai/models/fal-ai/luma-dream-machine/ray-2/modify (upload widget)",
    "undated; recorded in shared/reference/luma.md, not read again 2026-12-04",
)

#: The date of a user's row when its file's modification time cannot be read.
USER_DATE = "user"


def user_cite(what: str, path: Path) -> Cite:
    """A user's rows: ``what`` (``manifest``, ``prices file``) and the file, dated by its
    modification time (UTC), or ``user`` when that cannot be read."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return Cite(f"{what} {path}", USER_DATE)
    day = datetime.datetime.fromtimestamp(mtime, datetime.UTC).date().isoformat()
    return Cite(f"{what} {path}", day)
