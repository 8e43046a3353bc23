"""A small JSON Schema validator for the subset the OpenAPI document uses.

Supported: `type` (one or a list), `enum`, `properties`, `required`,
`additionalProperties` (bool or schema), `minLength`, `maxLength`, `pattern`,
`minimum`, `maximum`, `items`, `maxItems`, `minProperties`, `maxProperties`
and `$ref` to `#/components/schemas/...`. Anything else is ignored, as JSON
Schema ignores unknown keywords. `format` is an annotation only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

__all__ = ["SchemaError", "validate"]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "integer": (int,),
    "number": (int, float),
}


class SchemaError(ValueError):
    """The document does not match the schema; `path` is a JSON pointer to the culprit."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '/'}: {message}" if path else message)
        self.path = path or "/"
        self.detail = message


@lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False  # JSON true is not 1
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[kind])


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise LookupError(f"unsupported $ref {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        schema = target
    return schema


def validate(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
             path: str = "") -> None:
    """Raise `SchemaError` at the first place `value` breaks `schema` (refs resolve in `root`)."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, kind) for kind in kinds):
            raise SchemaError(path, f"expected {' or '.join(kinds)}")
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(repr(c) for c in schema["enum"])
        raise SchemaError(path, f"must be one of {choices}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise SchemaError(path, f"shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(path, f"longer than {schema['maxLength']} characters")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            raise SchemaError(path, f"does not match {schema['pattern']}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(path, f"less than {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(path, f"greater than {schema['maximum']}")
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(path, f"more than {schema['maxItems']} items")
        items = schema.get("items")
        if items is not None:
            for index, item in enumerate(value):
                validate(item, items, root, f"{path}/{index}")
    elif isinstance(value, dict):
        _validate_object(value, schema, root, path)


def _validate_object(value: dict[str, Any], schema: Mapping[str, Any],
                     root: Mapping[str, Any], path: str) -> None:
    for name in schema.get("required", ()):
        if name not in value:
            raise SchemaError(f"{path}/{name}", "is required")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        raise SchemaError(path, f"more than {schema['maxProperties']} properties")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        where = f"{path}/{_escape(name)}"
        if name in properties:
            validate(item, properties[name], root, where)
        elif extra is False:
            raise SchemaError(where, "is not allowed")
        elif isinstance(extra, Mapping):
            validate(item, extra, root, where)


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
