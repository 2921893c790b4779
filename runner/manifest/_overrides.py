"""A ``--prices FILE``: price (and limit) rows a user keeps apart from the manifest.

The file is YAML or JSON (JSON is YAML) of the manifest's ``prices:`` block's shape,
``{endpoint: row or [rows]}``, or a mapping with ``prices:`` and/or ``limits:`` keys shaped
like the manifest's. It is read by the manifest's own YAML loader and checked by the same
models, so a mistake is reported as ``FILE:LINE: FIELD: what is wrong`` and exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from ..endpoints import Overrides, issues_from, user_cite
from ._models import LimitBlock, Manifest, PriceBlock, _Entry, _price_rows_schema
from ._problems import Problems
from ._yaml import read_yaml

_SECTIONS = frozenset({"prices", "limits"})


class PriceFile(_Entry):
    """A --prices file: price rows by endpoint, and optionally limits by endpoint."""

    prices: PriceBlock = Field(default={}, json_schema_extra=_price_rows_schema)
    """Per-endpoint price rows (USD) replacing the table's and the manifest's."""
    limits: LimitBlock = {}
    """Per-endpoint limits replacing the table's and the manifest's."""

    @model_validator(mode="before")
    @classmethod
    def _bare_block(cls, data: Any) -> Any:
        # An endpoint id always has a '/', so a file whose keys are not all section names
        # is a bare prices: block.
        if isinstance(data, dict) and not set(data) <= _SECTIONS:
            return {"prices": data}
        return data


def load_overrides(path: Path) -> Overrides:
    """The rows of the --prices file at ``path``, cited to it; raises ``ManifestError``."""
    data, lines = read_yaml(path, "prices file")
    sectioned = set(data) <= _SECTIONS
    try:
        found = PriceFile.model_validate(data)
    except ValidationError as exc:
        problems = Problems(str(path), lines)
        for issue in issues_from(exc, PriceFile):
            # A bare block's locations start at the endpoint, not at "prices".
            loc = issue.loc if sectioned or issue.loc[:1] != ("prices",) else issue.loc[1:]
            problems.add(loc, issue.message)
        problems.raise_if_any()
        raise  # pragma: no cover - raise_if_any always raises when there were issues
    return Overrides(found.prices, found.limits, user_cite("prices file", path))


def manifest_overrides(manifest: Manifest, path: Path) -> Overrides:
    """A manifest's own ``prices:`` and ``limits:`` rows, cited to it."""
    return Overrides(manifest.prices, manifest.limits, user_cite("manifest", path))
