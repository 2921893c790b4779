"""Groups × matrix × prompts into job columns: validated inputs, keys, prices, outputs."""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Mapping
from itertools import product
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ..endpoints import (
    EndpointSpec,
    Issue,
    Loc,
    did_you_mean,
    format_loc,
)
from ..job import LocalFile, job_key, parent_ref, take_group
from ..plan import JobColumns
from ._cutting import START_IMAGE, Cutting, segmentable, settings_for
from ._long import LongClips
from ._looks import FRAME_ENDPOINT, LOOK_ENDPOINT, Looks, look_labels, look_path
from ._types import (
    NONE,
    STAND_IN_FILE,
    STAND_IN_PROMPT,
    UNPRICED,
    UNSAFE_ID_CHARS,
    Combo,
    Group,
    JobId,
    Layer,
    PlacedRow,
    Source,
    Template,
    Vars,
    append_job,
)

if TYPE_CHECKING:
    from ..media import MediaInfo
    from ._planner import Planner


def _input_key(group: Group, layers: list[Layer], placed: tuple[str, ...]) -> tuple[object, ...]:
    """Names one distinct input: layers are built once per manifest place and endpoint, so
    their places (with the endpoint and the fields a job places itself) name it; an empty
    layer (most sources have no input of their own) changes nothing."""
    return (group.spec.id, placed, *(layer.loc for layer in layers if layer.values))


SEPARATORS = re.compile(r"[/\\]")
DRIVE = re.compile(r"[A-Za-z]:")


class Expansion:
    """Turns groups into jobs: one validation per distinct input, then one job per prompt."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.problems = planner.problems
        self.index = 0
        self._validated: dict[tuple[object, ...], dict[str, Any] | None] = {}
        self._prompts: dict[tuple[str, str], bool] = {}
        self._outputs: dict[str, JobId] = {}
        self._keys: dict[str, JobId] = {}
        self._prices: dict[tuple[tuple[object, ...], float | None], float | None] = {}
        self.looks = Looks(planner)
        self.long = LongClips(self)  # after looks: a long clip's look is a gate's look too
        self._intermediates: dict[str, str] = {}  # claimed path -> the job's key

    def run(self, groups: list[Group]) -> JobColumns:
        """Every group's jobs, in order, as columns (problems go to the planner's list).

        Columns, not a JobSpec per job: at 100k jobs building the specs (and converting them
        to columns for the plan cache) was a fifth of planning; specs are built on use.
        """
        jobs = JobColumns.empty()
        for group in groups:
            self._group_jobs(group, jobs)
        return jobs

    def _group_jobs(self, group: Group, jobs: JobColumns) -> None:
        spec, source = group.spec, group.source
        info = self._source_media(group)
        prompts = self.planner.manifest.prompts
        source_field = group.source_field
        gated = self.looks.applies(group)
        placed = tuple(
            f
            for f in (
                source_field,
                "prompt" if group.prompts != [None] else None,
                START_IMAGE if gated else None,
            )
            if f
        )
        seconds = info.duration if info is not None else None
        layers = list(product(*group.matrix))
        combos = [self._combo(group, combo, placed, seconds) for combo in layers]
        # Long clips: a combination whose clip is longer than one render is cut.
        # A gate places start_image_url (the look) in the input it validates; a long clip's
        # renders get theirs from continuity, so its cutting sees the input without it.
        long_combos = [_without_start(c) for c in combos] if gated else combos
        cuttings = [
            self.long.cutting(group, [*group.layers, *own], combo, info)
            for own, combo in zip(layers, long_combos, strict=True)
        ]
        source_id = source.id if source is not None else None
        for combo in combos:
            jobs.local_files.update(combo.files)
        extra = self.planner.extra_takes
        added = [0] * len(combos)
        for prompt in group.prompts:
            text = prompts[prompt] if prompt is not None else None
            prompt_ok = prompt is None or text is None or self._prompt_ok(spec, prompt, text)
            if gated and prompt is not None and text is not None:
                prompt_ok = self.looks.prompt_ok(prompt, text) and prompt_ok
            for number, (combo, cutting) in enumerate(zip(combos, cuttings, strict=True)):
                takes = group.takes
                if extra:  # rerolls asked for more takes of this group (or of its look)
                    named = [take_group(source_id, prompt, combo.labels)]
                    if gated:
                        named.append(take_group(source_id, prompt, {}))
                    takes = max(takes, *(extra.get(name, 0) for name in named))
                for take in range(1, takes + 1):
                    index = self.index
                    self.index += 1
                    if combo.base is None or not prompt_ok:
                        continue
                    job = (index, group.loc, source_id, prompt, combo.labels, take)
                    arguments = dict(combo.base)
                    if text is not None:
                        arguments["prompt"] = text
                    if source_field is not None and source is not None:
                        arguments[source_field] = source.reference
                    if isinstance(cutting, Cutting):
                        made = self.long.add(
                            cutting,
                            group,
                            long_combos[number],
                            prompt,
                            text or "",
                            take,
                            job,
                            jobs,
                            gated=gated,
                        )
                        added[number] += made
                        continue
                    cost = combo.cost
                    if cutting is not None:  # one render, of the length that covers the clip
                        arguments["duration"], cost = cutting.duration, cutting.cost
                    if gated:
                        assert source is not None
                        made = self._gated(
                            group, combo, arguments, cost, take, job, source, text, jobs
                        )
                        added[number] += made
                        continue
                    key = job_key(spec.id, arguments, take)
                    output = self._output(group, combo, key, job)
                    if output is not None:
                        added[number] += 1
                        row = (source_id, prompt, combo.labels, cost, take)
                        append_job(jobs, key, spec.id, arguments, output, combo.shas, *row)
        if source_id is not None:
            for combo, cutting, count in zip(combos, cuttings, added, strict=True):
                if not count or combo.base is None:
                    continue
                renders, base, cost = self.planner.renders, combo.base, combo.cost
                if isinstance(cutting, Cutting):
                    cut = (cutting.description, cutting.sound)
                    renders.add(source_id, spec, base, combo.input_key, count, cutting.usd, cut)
                    continue
                if cutting is not None:
                    base, cost = {**base, "duration": cutting.duration}, cutting.cost
                renders.add(source_id, spec, base, combo.input_key, count, cost)

    def _gated(
        self,
        group: Group,
        combo: Combo,
        arguments: dict[str, Any],
        cost: float | None,
        take: int,
        job: JobId,
        source: Source,
        text: str | None,
        jobs: JobColumns,
    ) -> bool:
        """A render that waits for its look: the clip's frame (once), the look, the render;
        False when it cannot be made (its problem is on the list)."""
        frame = self.looks.frame(source)
        look = self.looks.look(frame, text or "", take)
        arguments[START_IMAGE] = parent_ref(look.key)
        key = job_key(group.spec.id, arguments, take)
        output = self._output(group, combo, key, job)
        if output is None:
            return False
        if look.key not in self.looks.added:
            look_job: JobId = (job[0], group.loc, source.id, job[3], {}, take)
            path = self._claim(look_path(source.id, job[3], take), look_job, group.template)
            if path is None:
                return False
            self.looks.added.add(look.key)
            if frame.key not in self.looks.added:
                self.looks.added.add(frame.key)
                assert source.file is not None
                jobs.local_files[source.file.sha256] = source.file
                row: PlacedRow = (source.id, None, {}, 0.0, 1)
                shas = (source.file.sha256,)
                append_job(
                    jobs, frame.key, FRAME_ENDPOINT, frame.arguments, frame.output, shas, *row
                )
            row = (source.id, job[3], look_labels(), look.cost, take)
            append_job(jobs, look.key, LOOK_ENDPOINT, look.arguments, path, (), *row, (frame.key,))
        prompt = job[3]
        row = (source.id, prompt, combo.labels, cost, take)
        append_job(
            jobs, key, group.spec.id, arguments, output, combo.shas, *row, (look.key,), (look.key,)
        )
        return True

    def _price(
        self, input_key: tuple[object, ...], base: dict[str, Any], seconds: float | None
    ) -> float | None:
        # One price per distinct validated input and length, whatever the groups sharing it.
        found = self._prices.get((input_key, seconds), UNPRICED)
        if found is UNPRICED:
            found = self._prices[(input_key, seconds)] = self.planner.prices.estimate(
                str(input_key[0]), base, seconds
            )
        return found  # type: ignore[return-value]

    def _combo(
        self,
        group: Group,
        combo: tuple[Layer, ...],
        placed: tuple[str, ...],
        seconds: float | None,
    ) -> Combo:
        """What every prompt's job of one matrix combination shares."""
        layers = [*group.layers, *combo]
        input_key = _input_key(group, layers, placed)
        base = self._validate(group, layers, placed, input_key)
        cost = self._price(input_key, base, seconds) if base else None
        files: dict[str, LocalFile] = {}
        for layer in layers:
            files.update(layer.files)
        if group.source is not None and group.source.file is not None:
            files[group.source.file.sha256] = group.source.file
        labels = {str(layer.loc[-2]): next(iter(layer.values.values())) for layer in combo}
        source = group.source
        variables = dict(base or {})
        if source is not None and group.source_field is not None:
            variables[group.source_field] = source.reference
        variables.update(
            clip=source.id if source is not None else NONE,
            image=source.id if source is not None else NONE,
            endpoint=group.spec.name,
            ext=group.spec.output_ext(variables),
        )
        return Combo(base, cost, files, tuple(files), labels, variables, input_key)

    def _source_media(self, group: Group) -> MediaInfo | None:
        source = group.source
        if source is None:
            return None
        measured = source.file or source.reference
        long = None
        if segmentable(group):  # cut when longer than one render: capped by max_source
            long = settings_for(self.planner.manifest.segments, source)
        return self.planner.check_media(
            measured, source.shown, group.spec, source.kind, source.loc, long=long
        )

    def _validate(
        self,
        group: Group,
        layers: list[Layer],
        placed: tuple[str, ...],
        cache_key: tuple[object, ...],
    ) -> dict[str, Any] | None:
        if cache_key in self._validated:
            return self._validated[cache_key]
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer.values)
        for name in placed:
            merged[name] = STAND_IN_PROMPT if name == "prompt" else STAND_IN_FILE
        arguments, issues = group.spec.validate(merged)
        for issue in issues:
            self._report(group, layers, issue)
        self._validated[cache_key] = arguments
        return arguments

    def _report(self, group: Group, layers: list[Layer], issue: Issue) -> None:
        name = issue.loc[0] if issue.loc else None
        origin = next((layer for layer in reversed(layers) if name in layer.values), None)
        spec = group.spec
        if origin is not None:
            self.problems.add(origin.origin(issue.loc), issue.message)
        elif issue.type == "missing":
            self.problems.add(
                (*group.loc, "input", *issue.loc),
                f"required by {spec.id}; set it in defaults:, this entry's input: or matrix:",
            )
        else:
            self.problems.add((*group.loc, "input", *issue.loc), issue.message)

    def _prompt_ok(self, spec: EndpointSpec, name: str, text: str) -> bool:
        key = (spec.id, name)
        if key not in self._prompts:
            issues = spec.check_field("prompt", text)
            for issue in issues:
                self.problems.add(("prompts", name), f"{issue.message} for {spec.id}")
            self._prompts[key] = not issues
        return self._prompts[key]

    def _output(self, group: Group, combo: Combo, key: str, job: JobId) -> str | None:
        """The job's output path, or None (and a problem) when it may not be written."""
        template = group.template
        if not template.usable:
            return None
        earlier = self._keys.get(key)
        if earlier is not None and earlier[2] != job[2]:
            # The same endpoint and input from another source: its file holds the same
            # bytes. One job (one upload, one render, paid once), flagged in the plan.
            assert job[2] is not None and earlier[2] is not None
            same_as, count = self.planner.duplicates.get(job[2], (earlier[2], 0))
            self.planner.duplicates[job[2]] = (same_as, count + 1)
            return None
        values = Vars(combo.variables)
        values["prompt"] = job[3] or NONE
        values["key"] = key[:12]
        values["index"] = job[0]
        values["take"] = job[5]
        try:
            rendered = template.text.format_map(values)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            self.problems.add(
                template.loc, f"cannot render {template.text!r}: {exc}", alike=template
            )
            return None
        problem = _path_problem(rendered)
        if problem is not None:
            self.problems.add(
                template.loc,
                f"{template.text!r} renders {rendered!r}, which {problem}",
                alike=template,
            )
            return None
        if job[5] > 1 and not template.takes:
            # A template without {take}: take 1 keeps its plain name, take N is "-takeN".
            rendered = take_path(rendered, job[5])
        path = self._claim(rendered, job, template)
        if path is None:
            return None
        first = self._keys.setdefault(key, job)
        if first is not job:
            self.problems.add(
                group.loc,
                f"{_describe(first)} and {_describe(job)} are the same job (same endpoint,"
                " input and file bytes); remove one",
                alike=("key", group.loc),
            )
            return None
        return path

    def _claim(self, rendered: str, job: JobId, template: Template) -> str | None:
        """``rendered`` in its one spelling, claimed for ``job``; None (and a problem) when
        another job renders to it."""
        # One spelling per file: "a//b", "./a/b" and "a\\b" are all a/b, and case-insensitive
        # file systems (macOS, Windows) would put A.mp4 and a.mp4 in one file.
        path = rendered
        if "\\" in path or "//" in path or "./" in path:
            path = "/".join(
                part for part in path.replace("\\", "/").split("/") if part not in ("", ".")
            )
        first = self._outputs.setdefault(_folded(path), job)
        if first is not job:
            self.problems.add(
                template.loc,
                f"{_describe(first)} and {_describe(job)} both render to {path!r} with"
                f" template {template.text!r}; add a variable that tells them apart",
                alike=("output", template),
            )
            return None
        return path

    def claim(self, path: str, key: str, owner: JobId) -> str:
        """An intermediate output's path (a long clip's segment, say), claimed for the
        job ``key`` that ``owner``'s output needs; another job's path gets the key's first
        digits added."""
        first = self._outputs.setdefault(_folded(path), owner)
        if first is owner and self._intermediates.setdefault(_folded(path), key) == key:
            return path
        pure = PurePosixPath(path)
        return self.claim(str(pure.with_name(f"{pure.stem}-{key[:8]}{pure.suffix}")), key, owner)


# --------------------------------------------------------------------------- helpers

#: What ``_append`` takes after a job's files: clip, prompt, labels, cost, take.


def take_path(path: str, take: int) -> str:
    """``path`` for take ``take`` when the template does not name it: ``-take2`` before
    the extension (``city/noir.mp4`` → ``city/noir-take2.mp4``)."""
    pure = PurePosixPath(path)
    return str(pure.with_name(f"{pure.stem}-take{take}{pure.suffix}"))


def input_layer(source: Source) -> Layer:
    return Layer(source.entry.input, (*source.loc, "input"))


def matrix_layers(matrix: Mapping[str, list[Any]], loc: Loc) -> dict[str, list[Layer]]:
    return {
        name: [Layer({name: value}, (*loc, name, i), matrix=True) for i, value in enumerate(values)]
        for name, values in matrix.items()
    }


def url_id(url: str) -> str:
    if url.startswith("data:"):
        return "data"
    stem = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return safe_id(stem.rpartition(".")[0] or stem) or "url"


def safe_id(text: str) -> str:
    """The id a file name gives: NFC (macOS spells names decomposed), each run of characters
    an id cannot hold made one '_', no leading dot (no hidden folder, no '..')."""
    text = unicodedata.normalize("NFC", text)
    return UNSAFE_ID_CHARS.sub("_", text).strip("_").lstrip(".").strip("_") or "file"


def _folded(path: str) -> str:
    """``path`` case-folded, as the same object when folding changes nothing (a copy of
    each of 100k output paths was 7 MB of a first plan)."""
    folded = path.casefold()
    return path if folded == path else folded


def _describe(job: JobId) -> str:
    _index, loc, source_id, prompt, labels, take = job
    shown = {**labels, "take": take} if take > 1 else labels
    matrix = ", ".join(f"{name}={value}" for name, value in shown.items())
    described = f"{source_id or NONE} × {prompt or NONE}" + (f" ({matrix})" if matrix else "")
    return f"{format_loc(loc)} ({described})" if loc[0] == "jobs" else described


@functools.lru_cache(maxsize=256)
def template_problem(text: str, known: frozenset[str]) -> str | None:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"{text!r} is not a valid template: {exc} (write {{{{ and }}}} for braces)"
    for _literal, name, _spec, _conversion in parsed:
        if name is None:
            continue
        if name == "" or not name.isidentifier():
            return f"{text!r}: {{{name}}} is not a template variable (use names like {{clip}})"
        if name not in known:
            return f"{text!r}: unknown variable {{{name}}}{did_you_mean(name, known)}"
    return _path_problem(text.replace("{", "").replace("}", ""), template=True)


def _path_problem(rendered: str, *, template: bool = False) -> str | None:
    """Why an output path may not be written inside output_dir, or None."""
    if (
        not template
        and rendered[:1] not in ("", "/", "\\")
        and rendered[1:2] != ":"
        and ".." not in rendered
        and "\0" not in rendered
        and rendered[-1] not in "/\\."
    ):
        return None  # the common case, decided without splitting
    if "\0" in rendered:
        return "contains a NUL character"
    if rendered.startswith(("/", "\\")) or DRIVE.match(rendered):
        return "is absolute; outputs are written inside output_dir"
    parts = SEPARATORS.split(rendered)
    if ".." in parts:
        return "climbs out of output_dir with '..'"
    if not template and (not parts[-1].strip() or parts[-1] == "."):
        return "has no file name"
    return None


def _without_start(combo: Combo) -> Combo:
    """``combo`` without the start image a gate placed in its validated input."""
    if combo.base is None or START_IMAGE not in combo.base:
        return combo
    base = {k: v for k, v in combo.base.items() if k != START_IMAGE}
    return combo._replace(base=base)
