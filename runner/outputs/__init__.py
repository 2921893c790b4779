"""Outputs: which files a result holds, where each goes, and how it lands on disk.

Downloads are verified (size, sha256, a server's ``Repr-Digest``), resumable (``Range``
from the ``.part`` file) and atomic: a file under its final name is always complete.
The engine names outputs by their path relative to the output directory; only the sink
turns that into a place on disk.
"""

from __future__ import annotations

from ._atomic import Downloaded
from ._download import download
from ._files import file_size, find_files, output_paths, text_field
from ._paths import (
    SIDECAR_SUFFIXES,
    check_relative,
    output_name_for,
    relative_to_root,
    safe_extension,
)
from ._sink import LocalSink, OutputSink

__all__ = (
    "SIDECAR_SUFFIXES",
    "Downloaded",
    "LocalSink",
    "OutputSink",
    "check_relative",
    "download",
    "file_size",
    "find_files",
    "output_name_for",
    "output_paths",
    "relative_to_root",
    "safe_extension",
    "text_field",
)
