"""Handing a batch over: the chosen takes in a delivery folder under clean names, a
delivery list (CSV and JSON) and an OpenTimelineIO timeline for an editor."""

from __future__ import annotations

from ._deliver import LIST_CSV, LIST_JSON, TIMELINE, Choice, Delivered, ExportResult, export
from ._timeline import Shot, write_timeline

__all__ = (
    "LIST_CSV",
    "LIST_JSON",
    "TIMELINE",
    "Choice",
    "Delivered",
    "ExportResult",
    "Shot",
    "export",
    "write_timeline",
)
