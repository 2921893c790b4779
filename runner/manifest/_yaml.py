"""Reading a manifest's YAML: line numbers for every field, and guards against absurd
input (size, depth, alias bombs, huge numbers)."""

from __future__ import annotations

import math
import stat
from pathlib import Path
from typing import Any

import yaml

from ..endpoints import (
    Loc,
    format_loc,
)
from ..errors import ManifestError, Problem
from ..media import (
    not_a_regular_file,
)

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


MAX_MANIFEST_BYTES = 64 * 2**20
MAX_DEPTH = 64
MAX_VALUES = 5_000_000  # YAML aliases can nest a billion values into a few lines
MAX_JOBS = 250_000  # 2.5x the 100k design point; a planned job holds about 1 KB
MAX_DIGITS = 100  # an integer longer than this is a mistake (and int() balks at 4300)

_MERGE_TAG = "tag:yaml.org,2002:merge"

# --------------------------------------------------------------------------- YAML


class _Loader(_BaseLoader):
    """PyYAML's safe loader, refusing duplicate keys and YAML 1.1's base-60 numbers.

    ``16:9`` is the integer 969 to a YAML 1.1 parser; here it stays the string ``16:9``.
    ``field_lines`` walks the composed node tree before construction, so every field path
    gets its line number and a duplicate key is refused with both of its lines.
    """

    def field_lines(self, root: yaml.Node) -> dict[Loc, int]:
        """The line of every field path under ``root``; raises ``_YamlProblem``."""
        lines: dict[Loc, int] = {(): root.start_mark.line + 1}
        sizes: dict[int, int] = {}
        self._locs: dict[int, Loc] = {}
        if self._walk(root, (), lines, sizes, 0) > MAX_VALUES:
            raise _YamlProblem((), f"expands to more than {MAX_VALUES:,} values (YAML aliases?)")
        return lines

    def _walk(
        self, node: yaml.Node, loc: Loc, lines: dict[Loc, int], sizes: dict[int, int], depth: int
    ) -> int:
        if depth > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise _YamlProblem(loc[:1], f"is nested more than {MAX_DEPTH} levels deep", line)
        if id(node) in sizes:  # an alias: counted again, walked once
            return sizes[id(node)]
        self._locs[id(node)] = loc
        size = 1
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    size += self._walk(value, loc, lines, sizes, depth + 1)
                    continue
                name = str(key.value)
                line = key.start_mark.line + 1
                if name in first:
                    raise _YamlProblem(
                        (*loc, name), f"duplicate key {name!r} (first on line {first[name]})", line
                    )
                first[name] = lines[(*loc, name)] = line
                size += self._walk(value, (*loc, name), lines, sizes, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*loc, index)] = item.start_mark.line + 1
                size += self._walk(item, (*loc, index), lines, sizes, depth + 1)
        sizes[id(node)] = size
        return size

    def _problem(self, node: yaml.Node, message: str) -> _YamlProblem:
        """A problem at ``node``: its line, and its field path when the walk saw it."""
        locs: dict[int, Loc] = getattr(self, "_locs", {})
        return _YamlProblem(locs.get(id(node), ()), message, node.start_mark.line + 1)

    def _number_or_text(self, node: yaml.ScalarNode) -> object:
        text = self.construct_scalar(node)
        if ":" in text:
            return text
        if node.tag.endswith(":int"):
            digits = sum(char.isdigit() for char in text)
            if digits > MAX_DIGITS:
                # int() refuses these itself (CPython's 4300-digit guard), with a ValueError.
                raise self._problem(node, f"a number of {digits:,} digits is not a sensible value")
            return self.construct_yaml_int(node)
        number = self.construct_yaml_float(node)
        if not math.isfinite(number):
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise self._problem(node, f"{shown!r} is not a finite number")
        return number

    def _text(self, node: yaml.ScalarNode) -> str:
        return str(self.construct_scalar(node))

    def _refuse(self, node: yaml.Node) -> None:
        raise self._problem(node, f"{node.tag} values are not supported")

    def _unknown_tag(self, node: yaml.Node) -> None:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise self._problem(
            node, f"the YAML tag {tag!r} is not supported: a manifest is plain YAML (no tags)"
        )

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose keys are strings: JSON, and so fal, knows no other keys."""
        mapping = super().construct_mapping(node, deep=deep)
        if all(isinstance(key, str) for key in mapping):
            return mapping
        return {key if isinstance(key, str) else str(key): value for key, value in mapping.items()}


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader._number_or_text)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader._number_or_text)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader._text)
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _Loader._refuse)
_Loader.add_constructor(None, _Loader._unknown_tag)


class _YamlProblem(Exception):
    def __init__(self, loc: Loc, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.loc, self.message, self.line = loc, message, line


def read_yaml(path: Path, what: str = "manifest") -> tuple[dict[str, Any], dict[Loc, int]]:
    """The manifest's data and the line of each field path; raises ManifestError.

    ``what`` names the file in messages (a --prices file is read the same way).
    """
    shown = str(path)
    needs = "name: and some jobs" if what == "manifest" else "a mapping of endpoint ids to rows"

    def fail(message: str, line: int | None = None, loc: Loc = ()) -> ManifestError:
        return ManifestError(Problem(shown, line, format_loc(loc), message))

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or a device would block or never end; a directory has nothing to read.
            reason = not_a_regular_file(path, info.st_mode).strerror
            raise fail(f"cannot read the {what}: {reason}")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise fail(f"is {info.st_size:,} bytes; a {what} may be at most {MAX_MANIFEST_BYTES:,}")
        raw = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read the {what}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise fail(f"is UTF-16 text; save the {what} as UTF-8", 1) from None
        line = raw.count(b"\n", 0, exc.start) + 1
        raise fail(
            f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start});"
            f" save the {what} as UTF-8",
            line,
        ) from None
    loader = _Loader(text)
    first_line = 1  # of the document, after any leading comments
    try:
        root = loader.get_single_node()
        if root is None:
            raise fail(f"the {what} is empty; it needs at least {needs}")
        first_line = root.start_mark.line + 1
        lines = loader.field_lines(root)
        data = loader.construct_document(root)
    except _YamlProblem as exc:
        raise fail(exc.message, exc.line or first_line, exc.loc) from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(shown, text, exc) from None
    except yaml.reader.ReaderError as exc:
        # A character YAML refuses (NUL and other control characters), found by the reader.
        line = text.count("\n", 0, exc.position) + 1
        raise fail(
            f"YAML syntax error: character #x{exc.character:04x} is not allowed"
            " (control characters cannot appear in YAML, even quoted)",
            line,
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise fail(f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise fail(
            f"the {what} must be a mapping ({needs}), not {_a(data)}"
            if what != "manifest"
            else f"the manifest must be a mapping (name:, clips:, prompts:, ...), not {_a(data)}",
            first_line,
        )
    return data, lines


def _syntax_error(shown: str, text: str, exc: yaml.MarkedYAMLError) -> ManifestError:
    mark = exc.problem_mark or exc.context_mark
    at_end = exc.problem_mark is not None and not text[exc.problem_mark.index :].strip()
    if exc.context_mark is not None and at_end:
        # Something opened (a quote, a bracket) is never closed: the file's end is no help,
        # where it was opened is.
        mark = exc.context_mark
    line = mark.line + 1 if mark is not None else None
    if at_end:  # never a line past the last one written
        last = text.rstrip().count("\n") + 1
        line = min(line, last) if line is not None else last
    source_line = text.splitlines()[line - 1] if line and line <= len(text.splitlines()) else ""
    indent = source_line[: len(source_line) - len(source_line.lstrip())]
    if "\t" in indent or "'\\t'" in str(exc.problem):
        message = "a tab is used for indentation; YAML needs spaces"
    else:
        context = f" ({exc.context})" if exc.context else ""
        message = f"YAML syntax error: {exc.problem}{context}"
    return ManifestError(Problem(shown, line, "", message))


def _a(value: object) -> str:
    return {list: "a list", str: "a string", type(None): "empty"}.get(
        type(value), f"a {type(value).__name__}"
    )
