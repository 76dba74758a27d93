"""Checking bodies against the OpenAPI specs in ``../shared/specs``.

Every ``test_emulator_*`` spec check loads its spec here, once per file, and fixes the spec's
dialect so that a JSON Schema 2020-12 validator reads it: OpenAPI 3.0 specs mark optional
values ``nullable: true``; the community-made ones write ``type: null`` beside ``anyOf``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml
from jsonschema import Draft202012Validator

__all__ = ["Dialect", "assert_valid", "components", "load_spec", "nullable_to_union", "validator"]

#: ``"nullable"``: OpenAPI 3.0's ``nullable: true``; ``"null-type"``: ``type: null`` beside
#: ``anyOf``.
Dialect: TypeAlias = Literal["nullable", "null-type"]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def load_spec(path: Path) -> dict[str, Any]:
    """The spec document, as written."""
    with path.open("rb") as fh:
        doc: dict[str, Any] = yaml.load(fh, Loader=_Loader)
    return doc


def nullable_to_union(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as a JSON Schema type union (``[type, "null"]``)."""
    if isinstance(node, dict):
        out = {k: nullable_to_union(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") is True and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [nullable_to_union(v) for v in node]
    return node


def _drop_null_types(node: Any) -> Any:
    """``type: null`` (YAML null, i.e. no type) beside ``anyOf``: dropped."""
    if isinstance(node, dict):
        return {k: _drop_null_types(v) for k, v in node.items() if not (k == "type" and v is None)}
    if isinstance(node, list):
        return [_drop_null_types(v) for v in node]
    return node


@cache
def components(path: Path, dialect: Dialect) -> dict[str, Any]:
    """The spec's ``components``, in JSON Schema terms."""
    fix = nullable_to_union if dialect == "nullable" else _drop_null_types
    return dict(fix(load_spec(path)["components"]))


def validator(components: dict[str, Any], schema: str | dict[str, Any]) -> Draft202012Validator:
    """A validator for ``schema`` (a component name, or an inline schema) with its refs
    resolved in ``components``."""
    inline = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": components}
    return Draft202012Validator(root | inline)


def assert_valid(checker: Draft202012Validator, label: object, body: Any) -> None:
    """Fail with the first error, where it is, unless ``body`` matches."""
    errors = sorted(checker.iter_errors(body), key=str)
    assert not errors, f"{label}: {errors[0].message} at {list(errors[0].absolute_path)}"
