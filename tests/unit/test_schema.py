"""The published JSON Schema is the model's, and the example conforms to it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from mailstack.site import schema
from tests.conftest import EXAMPLE, ROOT


def test_schema_json_is_in_step_with_the_model() -> None:
    published = (ROOT / "mailstack" / "site" / "schema.json").read_text()
    assert published == schema.dumps(), "run `make schema` and commit mailstack/site/schema.json"


def test_examples_validate_against_the_schema() -> None:
    data = json.loads(schema.dumps())
    jsonschema.Draft202012Validator.check_schema(data)
    for site in sorted(Path(ROOT / "inventories").glob("*/site.yml")):
        jsonschema.validate(yaml.safe_load(site.read_text()), data)
    bad = yaml.safe_load(EXAMPLE.read_text())
    bad["relya"] = bad.pop("relay")
    messages = [e.message for e in jsonschema.Draft202012Validator(data).iter_errors(bad)]
    assert any("'relya' was unexpected" in m for m in messages), messages
