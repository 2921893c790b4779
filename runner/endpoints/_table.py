"""``raybatch endpoints``: every known endpoint's fields, rules, limits and prices, cited.

``endpoint_rows`` builds the rows (one list, as data, for ``--json`` and tests);
``format_endpoints`` prints them grouped by endpoint. Rows a user supplied (a manifest's
``prices:``/``limits:``, a ``--prices`` file) are marked as theirs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from runner.endpoints._cite import (
    FAL_I2V,
    FAL_REFRAME,
    FAL_T2V,
    FAL_TYPES,
    FAL_UNI_EDIT,
    FAL_UNI_T2I,
    FAL_V2V,
    Cite,
)
from runner.endpoints._limits import Limit
from runner.endpoints._overrides import EndpointTables
from runner.endpoints._prices import Price
from runner.endpoints._registry import (
    EDIT_IMAGE,
    ENDPOINTS,
    IMAGE_TO_VIDEO,
    REFRAME,
    TEXT_TO_IMAGE,
    TEXT_TO_VIDEO,
    VIDEO_TO_VIDEO,
)
from runner.endpoints._rules import rules_for

Kind = Literal["field", "rule", "limit", "price"]

#: Where each known endpoint's fields (names, types, choices, defaults) come from. fal
#: publishes no llms.txt page for text-to-video, so its fields follow fal's types.
SCHEMA_SOURCES: dict[str, Cite] = {
    VIDEO_TO_VIDEO: FAL_V2V,
    TEXT_TO_VIDEO: FAL_TYPES,
    IMAGE_TO_VIDEO: FAL_I2V,
    REFRAME: FAL_REFRAME,
    TEXT_TO_IMAGE: FAL_UNI_T2I,
    EDIT_IMAGE: FAL_UNI_EDIT,
}
#: Fields whose source is not their endpoint's page.
FIELD_SOURCES: dict[tuple[str, str], Cite] = {
    (TEXT_TO_VIDEO, "reference_image_urls"): FAL_T2V,
    (IMAGE_TO_VIDEO, "keyframes"): FAL_TYPES,
    (IMAGE_TO_VIDEO, "keyframe_indexes"): FAL_TYPES,
    (VIDEO_TO_VIDEO, "controls"): FAL_TYPES,
    (VIDEO_TO_VIDEO, "user"): Cite(
        "a third party's contract tests pinned to fal's queue OpenAPI (shared/reference/"
        "luma.md, apicity-v2v); not in fal's types of 2026-08-02",
        "2026-10-08",
    ),
}


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """One line of ``raybatch endpoints``: a field, rule, limit or price, with its source."""

    endpoint: str
    kind: Kind
    name: str
    value: str
    source: str
    date: str
    note: str = ""
    user: bool = False


def endpoint_rows(tables: EndpointTables | None = None) -> list[EndpointRow]:
    """Every row of every known endpoint (fields, rules, limits, prices), then the rows of
    any other endpoint the user's layers price or limit, in that order."""
    tables = tables or EndpointTables()
    rows: list[EndpointRow] = []
    for endpoint in [*ENDPOINTS, *(e for e in tables.endpoints() if e not in ENDPOINTS)]:
        rows.extend(_field_rows(endpoint))
        rows.extend(
            EndpointRow(endpoint, "rule", rule.field, rule.text, *_cited(rule.cite), rule.note)
            for rule in rules_for(endpoint)
        )
        for limit in tables.limits_for(endpoint).values():
            value = ", ".join(limit.choices) if isinstance(limit.value, tuple) else _number(limit)
            rows.append(
                EndpointRow(
                    endpoint,
                    "limit",
                    limit.name,
                    value,
                    limit.source,
                    limit.date,
                    limit.note,
                    limit.user,
                )  # fmt: skip
            )
        rows.extend(_price_row(price) for price in tables.prices.rows(endpoint))
    return rows


def _number(limit: Limit) -> str:
    return f"{limit.number:,.0f}" if limit.number.is_integer() else f"{limit.number:g}"


def _cited(cite: Cite) -> tuple[str, str]:
    return cite.source, cite.date


def _field_rows(endpoint: str) -> Iterator[EndpointRow]:
    spec = ENDPOINTS.get(endpoint)
    if spec is None or spec.input_model is None or spec.fields is None:
        return
    schema = spec.input_model.model_json_schema()
    required = set(schema.get("required", ()))
    cite = SCHEMA_SOURCES[endpoint]
    for name, prop in schema["properties"].items():
        if name in spec.fields:
            described = _describe(prop, name in required)
            source = FIELD_SOURCES.get((endpoint, name), cite)
            yield EndpointRow(endpoint, "field", name, described, *_cited(source))


def _describe(prop: dict[str, Any], required: bool) -> str:
    """A field's JSON Schema in a few words: its choices or type, bounds, default."""
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    parts = []
    for option in options:
        if "$ref" in option:
            parts.append(option["$ref"].rsplit("/", 1)[-1])
        elif "enum" in option:
            parts.append("one of " + ", ".join(str(v) for v in option["enum"]))
        elif "const" in option:
            parts.append(str(option["const"]))
        else:
            parts.append(_typed(option))
    text = " or ".join(parts) or "any"
    if required:
        text += "; required"
    elif prop.get("default") is not None:
        text += f"; default {json.dumps(prop['default'])}"
    return text


def _typed(option: dict[str, Any]) -> str:
    kind = str(option.get("type", "any"))
    if kind == "array":
        items = option.get("items", {})
        bounds = _bounds(option, "minItems", "maxItems")
        return f"list of {_typed(items) if 'enum' not in items else 'choices'}{bounds}"
    if kind == "string":
        return "text" + _bounds(option, "minLength", "maxLength", " characters")
    if kind in ("number", "integer"):
        return kind + _bounds(option, "minimum", "maximum")
    return kind


def _bounds(option: dict[str, Any], low: str, high: str, unit: str = "") -> str:
    lo, hi = option.get(low), option.get(high)
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f", at least {lo}{unit}"
    if lo is None:
        return f", at most {hi}{unit}"
    return f", {lo}-{hi}{unit}"


def _price_row(price: Price) -> EndpointRow:
    when = " ".join(f"{k}={json.dumps(v).strip(chr(34))}" for k, v in price.when.items())
    value = f"${price.usd:g}" + (f" for {when}" if when else "")
    if price.note.startswith("estimate"):
        value += " (estimate)"
    name = "per " + price.per.replace("_", " ")
    return EndpointRow(
        price.endpoint, "price", name, value, price.source, price.date, price.note, price.user
    )


def rows_as_json(rows: list[EndpointRow]) -> str:
    """``raybatch endpoints --json``: ``{"endpoints": {id: [row, ...]}}``."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        entry = asdict(row)
        del entry["endpoint"]
        grouped.setdefault(row.endpoint, []).append(entry)
    return json.dumps({"endpoints": grouped}, indent=2)


def format_endpoints(rows: list[EndpointRow]) -> str:
    """``raybatch endpoints`` as text: per endpoint, one line per row with its date, and the
    sources listed once below (numbered); rows the user supplied are marked ``*``."""
    sources: dict[str, int] = {}
    lines: list[str] = []
    current = None
    for row in rows:
        if row.endpoint != current:
            current = row.endpoint
            known = "" if row.endpoint in ENDPOINTS else "  (pass-through: sent unchecked)"
            lines.append(("\n" if lines else "") + row.endpoint + known)
        number = sources.setdefault(row.source, len(sources) + 1)
        mark = "*" if row.user else " "
        lines.append(f" {mark}{row.kind:<6} {row.name:<20} {row.value}  [{number}, {row.date}]")
    lines.append("\nsources:")
    lines.extend(f"  [{number}] {source}" for source, number in sources.items())
    if any(row.user for row in rows):
        lines.append("* your rows (a manifest's prices:/limits: or a --prices file)")
    return "\n".join(lines)
