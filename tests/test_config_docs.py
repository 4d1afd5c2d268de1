"""config/README.md describes every config field, generated from the schema so the two cannot drift."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO

from rmtlens.workflow.config_docs import (
    BEGIN,
    END,
    config_reference,
    schema_fields,
    stray_keys,
    undocumented_fields,
    with_reference,
)

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
README = REPO / "config" / "README.md"


def test_config_readme_is_generated_from_the_schema():
    text = README.read_text()
    assert text == with_reference(text, SCHEMA), (
        "config/README.md is stale: run `.venv/bin/python -m rmtlens.workflow.config_docs`"
    )


def test_every_field_is_described_and_the_schema_has_no_stray_keys():
    assert undocumented_fields(SCHEMA) == []
    assert stray_keys(SCHEMA) == []


def test_every_field_of_every_preset_is_in_the_reference():
    documented = {f.path for f in schema_fields(SCHEMA)}
    reference = README.read_text()

    def paths(node, prefix, schema_node):
        for key, value in node.items():
            props = schema_node.get("properties", {})
            if key in props:
                path, child = f"{prefix}{key}", props[key]
            else:  # a user-chosen name: its fields are documented, not the name itself
                path, child = f"{prefix}<name>", schema_node["additionalProperties"]
                yield from paths(value, f"{path}.", child)
                continue
            yield path
            if isinstance(value, dict) and ("properties" in child or isinstance(child.get("additionalProperties"), dict)):
                yield from paths(value, f"{path}.", child)

    for preset in ["config.yaml", "config/test.yaml", "config/cifar10.yaml", "config/paper.yaml",
                   "config/digits-files.yaml"]:
        config = yaml.safe_load((REPO / preset).read_text())
        for path in paths(config, "", SCHEMA):
            assert path in documented, f"{preset}: {path} is not in the schema's fields"
            assert f"`{path}`" in reference, f"{preset}: {path} is not described in config/README.md"


def test_generator_notices_drift_and_missing_descriptions():
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["ridge"]["properties"]["rcond"]["default"] = 1e-12
    schema["properties"]["embed"]["properties"]["new_field"] = {"type": "integer"}
    text = README.read_text()
    regenerated = with_reference(text, schema)
    assert regenerated != text and "`1e-12`" in regenerated and "`embed.new_field`" in regenerated
    assert undocumented_fields(schema) == ["embed.new_field"]
    schema["properties"]["embed"]["properties"]["new_field"] = yaml.safe_load(
        "{type: integer, description: one, two}")
    assert stray_keys(schema) == ["/properties/embed/properties/new_field: 'two'"]
    with pytest.raises(ValueError, match="markers"):
        with_reference(text.replace(END, ""), schema)
    assert config_reference(SCHEMA) in text and text.count(BEGIN) == 1
