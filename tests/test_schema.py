"""The manifest's JSON Schema: committed, current, and right about the examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import MANIFESTS, ROOT, run_cli

SCHEMA_FILE = ROOT / "schema" / "manifest.schema.json"
EXAMPLES = sorted(MANIFESTS.glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> Any:
    """A validator for the committed schema, itself checked against its metaschema."""
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _problems(validator: Any, data: object) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def test_committed_schema_is_what_raybatch_schema_prints() -> None:
    """The committed schema is exactly ``raybatch schema``'s output, so it cannot go stale."""
    printed = run_cli("schema", key=None)
    assert printed.returncode == 0, printed.stderr
    assert SCHEMA_FILE.read_text() == printed.stdout, (
        "schema/manifest.schema.json is stale: run `raybatch schema > schema/manifest.schema.json`"
    )


@pytest.mark.parametrize(
    "manifest",
    [
        *(pytest.param(p, id=p.name) for p in EXAMPLES),
        pytest.param(ROOT / "tests" / "manifests" / "full.yaml", id="full"),
    ],
)
def test_every_example_validates(validator: Any, manifest: Path) -> None:
    """Each example manifest is valid under the schema and points editors at it."""
    text = manifest.read_text()
    schema_line = text.splitlines()[0]
    relative = schema_line.removeprefix("# yaml-language-server: $schema=")

    assert _problems(validator, yaml.safe_load(text)) == []
    assert schema_line.startswith("# yaml-language-server: $schema=")
    assert (manifest.parent / relative).resolve() == SCHEMA_FILE


def test_examples_exist() -> None:
    """There are examples to check (a moved directory must not make the test vacuous)."""
    assert {p.name for p in EXAMPLES} >= {"demo.yaml", "library-restyle.yaml"}


@pytest.mark.parametrize(
    ("where", "typo"),
    [
        ((), "promts"),
        (("clips", 0), "pth"),
        (("jobs", 0), "promt"),
    ],
)
def test_a_typo_in_a_key_is_rejected(
    validator: Any, where: tuple[str | int, ...], typo: str
) -> None:
    """A misspelt key, at the top or inside an entry, is refused by the schema itself."""
    data = yaml.safe_load((MANIFESTS / "demo.yaml").read_text())
    data["clips"][0] = {"path": data["clips"][0]}
    data["jobs"] = [{"clip": "city", "prompt": "noir"}]
    assert _problems(validator, data) == []
    target: Any = data
    for step in where:
        target = target[step]
    target[typo] = "x"

    errors = list(validator.iter_errors(data))
    # Inside anyOf (a clip may also be a bare string) the telling error is the deepest one.
    best = jsonschema.exceptions.best_match(errors)

    assert len(errors) == 1
    assert best is not None and f"'{typo}' was unexpected" in best.message
