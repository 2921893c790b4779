"""Which files a fal result holds, and where each goes under the job's output path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from ._paths import main_output_path, output_name_for


def find_files(value: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every fal ``File`` object in a result, with its field path (e.g. ``images.0``)."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(value, dict):
        if isinstance(value.get("url"), str) and (
            "content_type" in value or "file_name" in value or "file_size" in value
        ):
            return [(path, value)]
        for name, item in value.items():
            found += find_files(item, f"{path}.{name}" if path else str(name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += find_files(item, f"{path}.{i}" if path else str(i))
    return found


def output_paths(
    output: PurePosixPath, files: Sequence[tuple[str, dict[str, Any]]]
) -> list[PurePosixPath]:
    """Where each result file goes: the first under the job's output path (given the file's
    extension when the path has none, see ``main_output_path``), the others beside it as
    ``<stem>.<field><ext>``. fal supplies the field names and file names, so both are
    reduced to harmless characters (see ``paths.output_name_for``)."""
    if files:
        first = files[0][1]
        output = main_output_path(
            output,
            text_field(first.get("file_name")),
            text_field(first.get("content_type")),
            text_field(first.get("url")),
        )
    paths = [output]
    for field_path, file in files[1:]:
        name = output_name_for(
            text_field(file.get("file_name")),
            stem=output.stem,
            label=field_path,
            content_type=text_field(file.get("content_type")),
        )
        paths.append(output.parent / name)
    return paths


def text_field(value: object) -> str | None:
    """``value`` if it is a string, else None (fal's file fields are not trusted)."""
    return value if isinstance(value, str) else None


def file_size(value: object) -> int | None:
    """fal's advisory ``file_size`` when it is an integer, else None."""
    # fal's file_size is advisory; a non-integer one is ignored rather than trusted.
    return value if isinstance(value, int) and not isinstance(value, bool) else None
