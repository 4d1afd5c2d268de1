"""The configuration reference in ``config/README.md``, generated from the config schema.

``workflow/schemas/config.schema.yaml`` is the one source of truth for the
configuration: Snakemake validates every config against it, and the table of
fields in ``config/README.md`` (between the markers :data:`BEGIN` and :data:`END`)
is generated from it by :func:`config_reference`, so the two cannot drift
(``tests/test_config_docs.py`` compares them). After editing the schema::

    .venv/bin/python -m rmtlens.workflow.config_docs          # rewrite config/README.md
    .venv/bin/python -m rmtlens.workflow.config_docs --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN config reference: generated from workflow/schemas/config.schema.yaml -->"
END = "<!-- END config reference -->"


@dataclass(frozen=True)
class Field:
    """One configuration field: dotted path (``<name>`` for user-chosen keys), its type
    and constraints as text, default (``None`` when there is none), description, and
    whether it is required where its parent is present."""

    path: str
    kind: str
    default: str | None
    description: str
    required: bool
    section: bool
    required_when: str = ""


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if not ref:
        return node
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**_resolve(target, root), **{k: v for k, v in node.items() if k != "$ref"}}


def _literal(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _kind(node: dict, root: dict) -> str:
    node = _resolve(node, root)
    if "enum" in node:
        return " \\| ".join(f"`{_literal(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{_literal(node['const'])}`"
    types = node.get("type", "any")
    types = [types] if isinstance(types, str) else list(types)
    parts = []
    for t in types:
        if t == "array":
            items = node.get("items")
            parts.append(f"list of {_kind(items, root)}" if items else "list")
        elif t == "object" and isinstance(node.get("additionalProperties"), dict) and "properties" not in node:
            parts.append("mapping of names")
        else:
            parts.append(t)
    text = " or ".join(parts)
    bounds = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            bounds.append(f"{sign} {_literal(node[key])}")
    for key, word in (("minItems", "at least {} item(s)"), ("minProperties", "at least {} entry(ies)"),
                      ("minLength", "at least {} character(s)")):
        if key in node:
            bounds.append(word.format(node[key]))
    if node.get("uniqueItems"):
        bounds.append("no repeats")
    if "pattern" in node:
        bounds.append(f"matches `{node['pattern']}`")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _conditions(node: dict) -> dict[str, str]:
    """Fields an ``if``/``then`` of ``node`` requires, with the condition as text."""
    cond, then = node.get("if"), node.get("then")
    if not cond or not then or not then.get("required"):
        return {}
    parts = []
    for name, test in cond.get("properties", {}).items():
        if "const" in test:
            parts.append(f"`{name}` is `{_literal(test['const'])}`")
        elif "contains" in test and "const" in test["contains"]:
            parts.append(f"`{name}` contains `{_literal(test['contains']['const'])}`")
        else:
            raise ValueError(f"unsupported condition {cond!r}")
    return {name: " and ".join(parts) for name in then["required"]}


def schema_fields(schema: dict) -> list[Field]:
    """Every field of the schema, depth first in the schema's order."""
    fields: list[Field] = []

    def walk(node: dict, prefix: str, required: set[str]) -> None:
        node = _resolve(node, schema)
        conditional = _conditions(node)
        for name, child in node.get("properties", {}).items():
            child = _resolve(child, schema)
            path = f"{prefix}{name}"
            nested = "properties" in child
            named = isinstance(child.get("additionalProperties"), dict) and not nested
            default = _literal(child["default"]) if "default" in child else None
            fields.append(Field(path, _kind(child, schema), default, " ".join(str(child.get("description", "")).split()),
                                name in required, nested or named, conditional.get(name, "")))
            if nested:
                walk(child, f"{path}.", set(child.get("required", ())))
            if named:
                entry = _resolve(child["additionalProperties"], schema)
                walk(entry, f"{path}.<name>.", set(entry.get("required", ())))

    walk(schema, "", set(schema.get("required", ())))
    return fields


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if "\\|" not in text else text


def config_reference(schema: dict) -> str:
    """The Markdown reference of every field: one table per top-level section."""
    out: list[str] = []
    for field in schema_fields(schema):
        top = "." not in field.path
        if top:
            out += ["", f"### `{field.path}`", ""]
            if field.description:
                out += [field.description, ""]
            out += [f"{'Required' if field.required else 'Optional'}; {field.kind}"
                    + (f"; default `{field.default}`" if field.default is not None else "") + ".", ""]
            out += ["| field | type | default | description |", "|---|---|---|---|"]
            if not field.section:
                out.append(f"| `{field.path}` | {_cell(field.kind)} | "
                           f"{'`' + _cell(field.default) + '`' if field.default is not None else ('required' if field.required else '')} | "
                           f"{_cell(field.description)} |")
            continue
        if field.default is not None:
            default = f"`{_cell(field.default)}`"
        elif field.required:
            default = "required"
        elif field.required_when:
            default = f"required when {_cell(field.required_when)}"
        else:
            default = ""
        out.append(f"| `{field.path}` | {_cell(field.kind)} | {default} | {_cell(field.description)} |")
    return "\n".join(out).strip() + "\n"


def undocumented_fields(schema: dict) -> list[str]:
    """Paths of fields without a description (every field must say what it means)."""
    return [f.path for f in schema_fields(schema) if not f.description]


SCHEMA_KEYWORDS = frozenset({
    "$schema", "$defs", "$ref", "description", "type", "properties", "additionalProperties", "required",
    "propertyNames", "minProperties", "enum", "const", "default", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "pattern", "minLength", "items", "minItems", "uniqueItems", "contains", "if", "then",
})
"""The JSON-schema keywords the config schema uses."""


def stray_keys(schema: dict) -> list[str]:
    """Keys of schema nodes that are no JSON-schema keyword: JSON schema ignores them, so
    they are typing slips, such as an unquoted comma in a YAML flow mapping
    (``{description: a, b}`` makes ``b`` a key)."""
    stray: list[str] = []

    def walk(node, path: str, names: bool) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, path, False)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if names:  # keys of properties / $defs are field names
                walk(value, f"{path}/{key}", False)
            elif key not in SCHEMA_KEYWORDS:
                stray.append(f"{path}: {key!r}")
            elif key not in ("default", "const", "enum"):
                walk(value, f"{path}/{key}", key in ("properties", "$defs"))

    walk(schema, "", False)
    return stray


def with_reference(readme: str, schema: dict) -> str:
    """``readme`` with the text between :data:`BEGIN` and :data:`END` regenerated."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"the README must hold the markers {BEGIN!r} and {END!r} once each, in that order")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n\n{config_reference(schema)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path.cwd()
    parser.add_argument("--schema", type=Path, default=root / "workflow/schemas/config.schema.yaml")
    parser.add_argument("--readme", type=Path, default=root / "config/README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is stale, write nothing")
    args = parser.parse_args(argv)
    schema = yaml.safe_load(args.schema.read_text())
    stray = stray_keys(schema)
    if stray:
        print(f"keys that are no JSON-schema keyword in {args.schema}: {'; '.join(stray)}", file=sys.stderr)
        return 1
    missing = undocumented_fields(schema)
    if missing:
        print(f"fields without a description in {args.schema}: {', '.join(missing)}", file=sys.stderr)
        return 1
    current = args.readme.read_text()
    wanted = with_reference(current, schema)
    if args.check:
        if current != wanted:
            print(f"{args.readme} is stale: run python -m rmtlens.workflow.config_docs", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        args.readme.write_text(wanted)
        print(f"rewrote the reference in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
