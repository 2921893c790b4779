"""Clips and images after globbing: their ids, and the sources left out with the reason.

A source's id is its ``id:`` or its file name's stem as ``safe_id`` spells it: Unicode
letters stay (``東京.mp4`` is ``東京``, "Café Night.mov" is ``Café_Night``) and the id stays
a usable path part. A file listed on its own leaves every glob that also matches it (so a
globbed file can be given an id of its own), and a file matched by two globs is one
source, the first.

A source is left out (a ``SkippedSource``) when its file cannot be read, is not the media
its endpoint needs or breaks one of its limits, or when the id its file name gives is
already another source's: ``A001.mp4`` next to ``A001.mov``, two names differing only in
characters an id cannot hold, or only in case (which macOS and Windows disks cannot tell
apart). That reason names both files and suggests an id. Whether a left-out source stops
the plan is decided per command (``Plan.bad_source_error``): a manifest's
``on_bad_source: skip`` or ``--skip-bad`` plans the rest. An id the user wrote twice is a
mistake in the manifest, not in the library, and always stops it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..endpoints import Loc, format_loc
from ..media import MediaKind, extension
from ..plan import SkippedSource, glob_files
from ._expand import safe_id, url_id
from ._models import SourceEntry
from ._types import Source

if TYPE_CHECKING:
    from ._planner import Planner


class SourceList:
    """Collects one manifest's sources; ``skipped`` holds those left out."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.skipped: list[SkippedSource] = []
        self.skipped_ids: set[str] = set()

    def collect(self) -> dict[str, Source]:
        """Every usable clip and image by id, globs expanded, local files hashed."""
        manifest = self.planner.manifest
        found: dict[str, Source] = {}
        folded: dict[str, Source] = {}  # by casefolded id: A001 and a001 would share files
        claimed = self._listed_on_their_own()
        matched: set[str] = set()
        lists: tuple[tuple[str, MediaKind, list[SourceEntry]], ...] = (
            ("clips", "video", manifest.clips),
            ("images", "image", manifest.images),
        )
        for list_name, kind, entries in lists:
            for index, entry in enumerate(entries):
                for source in self._entry(entry, kind, (list_name, index), claimed, matched):
                    first = folded.get(source.id.casefold())
                    if first is None:
                        found[source.id] = folded[source.id.casefold()] = source
                    elif source.entry.id is not None:
                        self.planner.problems.add(
                            source.loc,
                            f"id {source.id!r} ({source.shown}) is already used by"
                            f" {format_loc(first.loc)} ({first.shown})",
                        )
                    else:
                        self._collision(source, first, folded)
        return found

    def skip(
        self, source_id: str, shown: str, loc: Loc, reason: str, suggested: str | None = None
    ) -> None:
        """Leave a source out, with the reason and where the manifest names it."""
        problems = self.planner.problems
        self.skipped.append(
            SkippedSource(
                source_id,
                shown,
                reason,
                problems.file,
                problems.line(loc),
                format_loc(loc),
                suggested,
            )
        )
        self.skipped_ids.add(source_id)

    def _listed_on_their_own(self) -> set[str]:
        """Real paths of the files that clips:/images: entries name without a glob."""
        manifest, base = self.planner.manifest, self.planner.base_dir
        return {
            os.path.realpath(base / entry.path)
            for entry in (*manifest.clips, *manifest.images)
            if entry.path is not None and not _is_glob(entry.path)
        }

    def _entry(
        self, entry: SourceEntry, kind: MediaKind, loc: Loc, claimed: set[str], matched: set[str]
    ) -> Iterator[Source]:
        planner = self.planner
        if entry.url is not None:
            yield Source(entry.id or url_id(entry.url), kind, loc, entry, entry.url, entry.url)
            return
        assert entry.path is not None
        if not _is_glob(entry.path):
            yield from self._file(entry.path, entry.id, kind, loc, entry)
            return
        if entry.id is not None:
            planner.problems.add((*loc, "id"), "a glob's ids come from its file names; remove id:")
        # os.path.join lets an absolute pattern stand; Path.glob refuses those.
        pattern = os.path.join(planner.base_dir, entry.path)
        matches = glob_files(pattern)
        planner.globbed.append((pattern, tuple(matches)))
        if not matches:
            planner.problems.add((*loc, "path"), f"{entry.path} matches no file")
        absolute = os.path.isabs(entry.path)
        for match in matches:
            real = os.path.realpath(match)
            if real in claimed or real in matched:
                continue
            matched.add(real)
            shown = match if absolute else Path(os.path.relpath(match, planner.base_dir)).as_posix()
            yield from self._file(shown, None, kind, loc, entry)

    def _file(
        self, shown: str, given: str | None, kind: MediaKind, loc: Loc, entry: SourceEntry
    ) -> Iterator[Source]:
        source_id = given or safe_id(Path(shown).stem)
        file = self.planner.local(shown)
        if file is None:
            if not os.path.lexists(self.planner.base_dir / shown):
                # Not hashed, so not among the plan's inputs: a remembered plan must still
                # notice the file appearing (a glob of one name matches it then).
                self.planner.globbed.append((str(self.planner.base_dir / shown), ()))
            else:
                self.planner.volatile = True  # unreadable now, perhaps not after a chmod
            self.skip(source_id, shown, (*loc, "path"), self.planner.file_errors[shown])
            return
        yield Source(source_id, kind, loc, entry, file.placeholder, shown, file)

    def _collision(self, source: Source, first: Source, taken: dict[str, Source]) -> None:
        ext, first_ext = extension(source.shown), extension(first.shown)
        base = f"{source.id}_{ext}" if ext and ext != first_ext else f"{source.id}_2"
        suggested, n = base, 2
        while suggested.casefold() in taken or suggested in self.skipped_ids:
            n += 1
            suggested = f"{base}_{n}"
        case = (
            f" (it differs from {first.id!r} only in case, which macOS and Windows disks"
            " cannot tell apart)"
            if first.id != source.id
            else ""
        )
        key = "url" if source.entry.url is not None else "path"
        reason = (
            f"its id {source.id!r} is already {first.shown}'s ({format_loc(first.loc)}){case};"
            f" list it on its own with another id: - {{{key}: {source.shown}, id: {suggested}}}"
        )
        self.skip(source.id, source.shown, source.loc, reason, suggested)


def _is_glob(path: str) -> bool:
    return any(char in path for char in "*?[")
