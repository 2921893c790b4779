"""Media against an endpoint's limits: each file measured and checked once per endpoint.

A reason never names the file (the caller does: a problem at a manifest place, or a
source left out), so one check serves both. Every limit consulted is remembered as
applied, for ``plan`` to show with its source.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import media
from ..endpoints import EndpointSpec, EndpointTables, Limit, Loc, MediaField, format_loc
from ..job import LocalFile
from ..media import RENDER_SECONDS, extension
from ._models import Segments
from ._types import ARTICLE

if TYPE_CHECKING:
    from typing import TypeAlias

    from ..media import MediaInfo

    #: What a check found: the measured facts (None: not measured) and every reason it fails.
    Checked: TypeAlias = tuple[MediaInfo | None, list[str]]


class MediaChecks:
    """Measures and checks media for one plan, remembering each answer."""

    def __init__(self, tables: EndpointTables, *, probe_media: bool, probe_remote: bool) -> None:
        self.tables = tables
        self.probe_media = probe_media
        self.probe_remote = probe_remote
        #: Every limit consulted, by (endpoint, name).
        self.applied: dict[tuple[str, str], Limit] = {}
        self._checked: dict[tuple[Path | str, str, MediaField, object], Checked] = {}

    def check(
        self,
        file: LocalFile | str,
        spec: EndpointSpec,
        kind: MediaField,
        *,
        long: tuple[Segments, Loc] | None = None,
    ) -> Checked:
        """A local file (or a remote URL, measured only with probe_remote) checked against
        ``spec``'s limits: its facts and the reasons it cannot be used there.

        ``long``: the clip is cut into renders when longer than one (its ``segments:``
        settings and their place), so its length is capped by ``max_source`` instead of
        the endpoint's longest source, and it must have a length to cut."""
        cap = None if long is None else (long[0].max_source, format_loc(long[1]))
        key = (file.path if isinstance(file, LocalFile) else file, spec.id, kind, cap)
        checked = self._checked.get(key)
        if checked is None:
            checked = self._checked[key] = self._check(file, spec, kind, cap)
        return checked

    def _limit(self, spec: EndpointSpec, name: str) -> Limit | None:
        found = self.tables.limits_for(spec.id).get(name)
        if found is not None:
            self.applied.setdefault((spec.id, name), found)
        return found

    def _check(
        self,
        file: LocalFile | str,
        spec: EndpointSpec,
        kind: MediaField,
        cap: tuple[float, str] | None,
    ) -> Checked:
        local = isinstance(file, LocalFile)
        reasons: list[str] = []
        info, unreadable = self._measure(file, kind)
        if unreadable is not None:
            reasons.append(unreadable)
        size = file.size if isinstance(file, LocalFile) else info.size if info else None
        size_limit = self._limit(spec, "max_file_bytes") if size is not None else None
        if size_limit is not None and size is not None and size > size_limit.number:
            reasons.append(
                f"{size / 1e6:.1f} MB; {spec.name} accepts at most"
                f" {size_limit.number / 1e6:g} MB {size_limit.cite}"
            )
        if kind == "any":
            return info, reasons
        ext = extension(file.path.name) if isinstance(file, LocalFile) else None
        containers = self._limit(spec, f"{kind}_containers") if ext is not None else None
        if containers is not None and ext is not None and ext not in containers.choices:
            reasons.append(
                f".{ext} files are not accepted by {spec.name}"
                f" (accepted: {', '.join(containers.choices)}) {containers.cite}"
            )
        if info is not None and not info.fits(kind) and (local or info.kind != "unknown"):
            what = ARTICLE[info.kind]
            if info.kind == "unknown" and info.has_audio:
                what = "sound only, with no video stream"
            reasons.append(f"is {what}, but {spec.name} needs {ARTICLE[kind]} here")
            info = None
        measured = kind == "video" and info is not None and info.duration is not None
        sent = (info.duration or 0.0) if info is not None else 0.0
        if cap is not None and info is not None and kind == "video":
            reasons.extend(_long_problems(info, *cap))
            # A clip longer than one render is cut: what is sent is a segment, at least
            # the shortest render long; a shorter clip is sent whole.
            sent = min(sent, min(RENDER_SECONDS))
        seconds = self._limit(spec, "max_source_seconds") if measured else None
        if info is not None and seconds is not None and sent > seconds.number:
            reasons.append(
                f"{info.duration or 0:.1f} s long; {spec.name} accepts at most"
                f" {seconds.number:g} s {seconds.cite}"
                + (f", and raybatch cuts at least {min(RENDER_SECONDS)} s" if cap else "")
            )
        return info, reasons

    def _measure(
        self, file: LocalFile | str, kind: MediaField
    ) -> tuple[MediaInfo | None, str | None]:
        """The file's media facts (None: not measured), or why it could not be read."""
        try:
            if isinstance(file, LocalFile):
                measure = self.probe_media and kind != "any"
                return (media.probe(file.path) if measure else None), None
            remote = self.probe_remote and not file.startswith("data:")
            return (media.probe_remote(file) if remote else None), None
        except media.MediaError as exc:
            what = f"could not be read as {kind}" if isinstance(file, LocalFile) else "unusable"
            return None, f"{what}: {exc.reason}"


def _long_problems(info: MediaInfo, max_source: float, where: str) -> list[str]:
    """A clip to cut must have a length, a rate, and be no longer than ``max_source``."""
    if not info.duration or info.duration <= 0:
        return ["its video has no length (zero frames or no duration)"]
    if not info.fps:
        return ["its frame rate cannot be read"]
    if info.duration > max_source:
        return [
            f"{_hours(info.duration)} long, over the longest clip raybatch cuts"
            f" ({_hours(max_source)}, segments.max_source at {where}); raise max_source or"
            " trim the clip"
        ]
    return []


def _hours(seconds: float) -> str:
    """``7200`` as ``2h``, ``5430`` as ``1h30m30s``, ``95.5`` as ``95.5 s``."""
    if seconds < 60:
        return f"{seconds:g} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)
