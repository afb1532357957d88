"""The published JSON Schema of the site file, derived from the model's dataclasses.

``python -m mailstack.site.schema`` prints it; ``mailstack/site/schema.json`` is that output,
kept in step with the model by a test. Editors use it for completion and validation.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, get_args, get_origin

from mailstack.site.model import Site


def _schema(tp: Any) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        nullable = [{"type": "null"}] if type(None) in get_args(tp) else []
        return {"anyOf": [*(_schema(o) for o in options), *nullable]}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin is tuple:
        return {"type": "array", "items": _schema(get_args(tp)[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(get_args(tp)[1])}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if tp is str:
        return {"type": "string"}
    if tp is int:
        return {"type": "integer"}
    if tp is bool:
        return {"type": "boolean"}
    raise TypeError(tp)


def _collect(cls: Any, defs: dict[str, Any]) -> None:
    if cls.__name__ in defs:
        return
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required = []
    defs[cls.__name__] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        prop = _schema(hints[f.name])
        prop["description"] = f.metadata.get("doc", "")
        if "pattern" in f.metadata:
            prop["pattern"] = f.metadata["pattern"]
        if f.default is not dataclasses.MISSING and f.default is not None:
            prop["default"] = _plain_default(f.default)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        props[f.name] = prop
        for arg in [hints[f.name], *_nested(hints[f.name])]:
            if dataclasses.is_dataclass(arg):
                _collect(arg, defs)
    defs[cls.__name__] = {"type": "object", "description": (cls.__doc__ or "").strip(),
                          "properties": props, "required": required,
                          "additionalProperties": False}


def _nested(tp: Any) -> list[Any]:
    out = []
    for arg in get_args(tp):
        out.append(arg)
        out += _nested(arg)
    return out


def _plain_default(value: object) -> object:
    """A field's default as JSON: tuples as lists, dataclasses as mappings without Nones."""
    if isinstance(value, tuple):
        return [_plain_default(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    return value


def schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    _collect(Site, defs)
    root = defs.pop("Site")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://mailstack.invalid/site.schema.json",
            "title": "mailstack site file", **root, "$defs": dict(sorted(defs.items()))}


def dumps() -> str:
    return json.dumps(schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(dumps(), end="")
