"""Safe names for output files: where a job may write, and what a remote name may become.

Pure path and string logic, no I/O. Output paths come from two places we do not fully
trust: the manifest (a typo like ``../../x``) and fal's results (``file_name`` fields a
compromised or buggy service controls). Everything here either returns a path that stays
under the output directory or raises :class:`~runner.errors.UnsafeOutput`.
"""

from __future__ import annotations

import mimetypes
import os
import re
from pathlib import Path, PurePosixPath

from ..errors import UnsafeOutput

__all__ = (
    "MAX_NAME_BYTES",
    "SIDECAR_SUFFIXES",
    "check_relative",
    "main_output_path",
    "output_name_for",
    "relative_to_root",
    "safe_extension",
)

#: The longest file name most filesystems take (ext4, APFS, XFS: 255 bytes).
MAX_NAME_BYTES = 255
#: Suffixes the downloader adds beside a final name; a final name leaves room for them.
SIDECAR_SUFFIXES = (".part", ".part.json")
_FINAL_NAME_BYTES = MAX_NAME_BYTES - max(len(s) for s in SIDECAR_SUFFIXES)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,10})$")
_UNSAFE_LABEL = re.compile(r"[^A-Za-z0-9_-]+")
# Types that the stdlib table does not know on every platform.
_EXTRA_TYPES = {"image/x-exr": ".exr", "image/exr": ".exr", "video/mp4": ".mp4"}


def check_relative(relative: str | PurePosixPath) -> PurePosixPath:
    """Return ``relative`` as a path that cannot leave the directory it is joined to.

    Refused (``UnsafeOutput``): empty, absolute, any ``..`` component, NUL or other control
    characters, a component over 255 bytes, or a final name too long for the ``.part``
    files written beside it.
    """
    text = str(relative)
    if _CONTROL.search(text):
        raise UnsafeOutput(f"output path {text!r} contains a control character or NUL")
    path = PurePosixPath(text)
    if not text or path.is_absolute() or not path.parts:
        raise UnsafeOutput(f"output path {text!r} must be a non-empty relative path")
    if ".." in path.parts:
        raise UnsafeOutput(f"output path {text!r} climbs out of the output directory")
    for part in path.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise UnsafeOutput(f"output path component {part[:40]!r}... is over 255 bytes")
    if len(os.fsencode(path.name)) > _FINAL_NAME_BYTES:
        raise UnsafeOutput(
            f"output file name {path.name[:40]!r}... is over {_FINAL_NAME_BYTES} bytes"
            " (room is kept for the .part files beside it)"
        )
    return path


def relative_to_root(root: Path, dest: Path) -> PurePosixPath:
    """Where ``dest`` lies under ``root``, lexically (``..`` collapsed, symlinks not followed).

    Raises ``UnsafeOutput`` when ``dest`` is ``root`` itself or lies outside it.
    """
    if "\0" in str(dest):
        raise UnsafeOutput("output path contains a NUL byte")
    base = os.path.abspath(root)
    target = os.path.abspath(dest)
    if os.path.commonpath([base, target]) != base or target == base:
        raise UnsafeOutput(f"output path {str(dest)!r} is not inside {str(root)!r}")
    return check_relative(PurePosixPath(Path(target).relative_to(base).as_posix()))


def safe_extension(file_name: str | None, content_type: str | None = None) -> str:
    """A harmless extension (``".mp4"``, ``".exr"``, or ``""``) for a remote file.

    Taken from the remote ``file_name`` when it ends in 1-10 letters or digits after a
    dot, else guessed from ``content_type``; never anything a shell or a path would read
    specially.
    """
    if file_name:
        base = re.split(r"[/\\]", file_name)[-1]
        match = _EXTENSION.search(base)
        if match:
            return "." + match.group(1).lower()
    if content_type:
        mime = content_type.split(";", 1)[0].strip().lower()
        guess = _EXTRA_TYPES.get(mime) or mimetypes.guess_extension(mime, strict=False)
        if guess and _EXTENSION.fullmatch(guess):
            return guess
    return ""


#: The extension of a result file that says nothing of its type (never extension-less).
UNKNOWN_EXTENSION = ".bin"


def main_output_path(
    output: PurePosixPath, file_name: str | None, content_type: str | None, url: str | None
) -> PurePosixPath:
    """Where a job's main result file goes: ``output``, given an extension when its template
    rendered none (a pass-through endpoint, whose file type raybatch cannot know in advance).

    The extension comes from fal's ``file_name``, else its ``content_type``, else the URL's
    last path segment, else ``.bin``: a file is never saved without one.
    """
    if output.suffix:
        return output
    url_name = url.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1] if url else None
    ext = safe_extension(file_name, content_type) or safe_extension(url_name) or UNKNOWN_EXTENSION
    return check_relative(output.with_name(output.name + ext))


def output_name_for(
    remote_file_name: str | None, *, stem: str, label: str, content_type: str | None = None
) -> str:
    """The file name of a secondary output: ``<stem>.<label><ext>``, e.g. ``clip.exr_file.exr``.

    ``label`` (a result field path, remote-supplied) keeps only letters, digits, ``_`` and
    ``-``; the extension comes from :func:`safe_extension`. The remote name never supplies
    anything but that extension, so it cannot pick a directory or a hidden file.
    """
    slug = _UNSAFE_LABEL.sub("-", label).strip("-") or "output"
    ext = safe_extension(remote_file_name, content_type)
    room = _FINAL_NAME_BYTES - len(os.fsencode(stem)) - len(ext) - 1
    name = f"{stem}.{slug[: max(room, 1)]}{ext}"
    return str(check_relative(name))
