"""Load a site file: YAML with line marks -> typed, frozen :class:`Site`.

The shape is read off the dataclasses in ``model.py``: unknown keys (with the nearest valid key
suggested), wrong types, missing keys and duplicate keys are reported as findings with file,
line and key path. Nothing here decides policy; semantic checks live in ``mailstack.checks``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import types
import typing
from pathlib import Path as FsPath
from typing import Any, Literal, get_args, get_origin

import yaml

from mailstack.errors import InputError
from mailstack.findings import Finding, raise_errors, suggest
from mailstack.site.marks import Mark, Marks, Path
from mailstack.site.model import Site

_SECRET_KEY = re.compile(r"pass(word|wd)?$|secret$|^key$|token$", re.IGNORECASE)


class _Missing:
    pass


MISSING = _Missing()


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser (Debian's and PyPI's PyYAML have it): about 5 times faster than PyYAML's own,
80 times on one long value, and it bounds nesting itself (bench/hostile_site.py)."""
MAX_BYTES = 64 * 1024 * 1024
"""A site file larger than this is refused before it is parsed (100,000 accounts: ~15 MB)."""
MAX_DEPTH = 32
"""Nesting deeper than this is refused (the model is five levels deep)."""
MAX_ALIAS_VALUES = 10_000
"""Values reached again through YAML aliases, at most: more is a "billion laughs", refused."""


class _Walk:
    """The bounds of one walk over a YAML node graph: depth, alias expansion, cycles."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: set[int] = set()
        self.ancestors: list[int] = []
        self.in_alias = 0
        """How many of the collections being walked were reached again (through an alias)."""
        self.aliased = 0
        """Values visited through aliases so far."""

    def refuse(self, node: yaml.Node, message: str) -> InputError:
        return InputError(f"{self.name}:{node.start_mark.line + 1}: (top): {message}")

    def count(self, node: yaml.Node, again: bool) -> None:
        if again or self.in_alias:
            self.aliased += 1
            if self.aliased > MAX_ALIAS_VALUES:
                raise self.refuse(node, f"YAML aliases expand to more than {MAX_ALIAS_VALUES} "
                                        "values (refused: this is how a billion-laughs file "
                                        "starts)")


def read_yaml(path: FsPath) -> tuple[Any, Marks]:
    """Parse YAML into plain values and a table of line marks by key path.

    Hostile input is refused with a clear error by size, depth, alias expansion and cycles,
    counted, not timed."""
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"{name}: the site file has {size} bytes; at most {MAX_BYTES} are "
                             "read")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{name}: cannot read the site file: {err.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{name}: the site file is not UTF-8 text") from None
    loader = None
    try:
        loader = LOADER(text)  # its reader refuses characters YAML does not allow
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else 1
        if "maximum nesting depth" in (err.problem or ""):  # libyaml's own bound (1000)
            raise InputError(f"{name}:{line}: (top): the YAML is nested too deeply (at most "
                             f"{MAX_DEPTH} levels)") from None
        raise InputError(f"{name}:{line}: (top): YAML syntax error: {err.problem}") from None
    except yaml.reader.ReaderError as err:  # a character YAML does not allow (NUL, ...)
        line = text.count("\n", 0, err.position) + 1
        code = err.character if isinstance(err.character, int) else ord(err.character)
        raise InputError(f"{name}:{line}: (top): the site file holds the character "
                         f"U+{code:04X}, which YAML does not allow") from None
    except RecursionError:
        raise InputError(f"{name}: (top): the YAML is nested too deeply (at most {MAX_DEPTH} "
                         "levels)") from None
    finally:
        if loader is not None:
            loader.dispose()
    marks = Marks(file=name)
    if node is None:
        return {}, marks
    findings: list[Finding] = []
    value = _to_python(loader, node, (), marks, findings, _Walk(name))
    raise_errors(findings)
    return value, marks


@functools.cache
def _model_fields(cls: Any) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A model class's type hints and fields (asked once per class, not per mapping)."""
    return typing.get_type_hints(cls), {
        f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _to_python(loader: yaml.SafeLoader, node: yaml.Node, path: Path, marks: Marks,
               findings: list[Finding], walk: _Walk) -> Any:
    marks.lines.setdefault(path, node.start_mark.line + 1)
    ident = id(node)
    again = ident in walk.seen
    walk.seen.add(ident)
    walk.count(node, again)
    if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        try:
            return loader.construct_object(node)
        except Exception as err:  # PyYAML's tag constructors fail in many ways on bad text
            where = ".".join(str(k) for k in path) or "(top)"
            kind = node.tag.rsplit(":", 1)[-1]
            problem = getattr(err, "problem", None) or (
                str(err) if isinstance(err, ValueError) else f"not a valid {kind}")
            raise InputError(f"{walk.name}:{node.start_mark.line + 1}: {where}: cannot read "
                             f"the value {node.value!r} ({node.tag}): {problem}") from None
    if ident in walk.ancestors:
        raise walk.refuse(node, "a YAML alias refers to the value that contains it")
    if len(walk.ancestors) >= MAX_DEPTH:
        raise walk.refuse(node, f"the YAML is nested too deeply (at most {MAX_DEPTH} levels)")
    walk.ancestors.append(ident)
    walk.in_alias += again
    try:
        return _collection(loader, node, path, marks, findings, walk)
    finally:
        walk.ancestors.pop()
        walk.in_alias -= again


def _collection(loader: yaml.SafeLoader, node: yaml.Node, path: Path, marks: Marks,
                findings: list[Finding], walk: _Walk) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _to_python(loader, key_node, path, marks, findings, walk)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in out:
                findings.append(Finding(Mark(marks.file, key_node.start_mark.line + 1), child,
                                        "duplicate key (YAML keeps only the last one)"))
            marks.lines[child] = key_node.start_mark.line + 1
            out[key] = _to_python(loader, value_node, child, marks, findings, walk)
        return out
    return [_to_python(loader, item, (*path, i), marks, findings, walk)
            for i, item in enumerate(node.value)]


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is str:
        return "a string"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is tuple:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int):
        return f"{value} (a number)"
    return repr(value)


class _Builder:
    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self.findings: list[Finding] = []
        self.on_mapping: str | None = None  # a field's own message for a mapping value

    def error(self, path: Path, message: str) -> _Missing:
        self.findings.append(Finding(self.marks.at(path), path, message))
        return MISSING

    def build(self, tp: Any, value: Any, path: Path) -> Any:
        origin = get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in get_args(tp) if a is not type(None)]
            if value is None:
                return None
            # int | str: a number stays a number, anything else is read as the string option
            chosen = next((o for o in options if o is int and isinstance(value, int)
                           and not isinstance(value, bool)), options[-1])
            return self.build(chosen, value, path)
        if dataclasses.is_dataclass(tp):
            return self.build_dataclass(tp, value, path)
        if origin is tuple:
            if not isinstance(value, list):
                return self.error(path, f"expected a list, got {_describe(value)}")
            (item_tp, _) = get_args(tp)
            items = [self.build(item_tp, v, (*path, i)) for i, v in enumerate(value)]
            return MISSING if any(i is MISSING for i in items) else tuple(items)
        if origin is dict:
            if not isinstance(value, dict):
                return self.error(path, f"expected a mapping, got {_describe(value)}")
            _, item_tp = get_args(tp)
            built = {str(k): self.build(item_tp, v, (*path, str(k))) for k, v in value.items()}
            return MISSING if any(v is MISSING for v in built.values()) else built
        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed:
                hint = suggest(str(value), [str(a) for a in allowed])
                return self.error(path, f"expected {_type_name(tp)}, got {_describe(value)}{hint}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return self.error(path, f"expected an integer, got {_describe(value)}")
            return value
        if tp is bool:
            if not isinstance(value, bool):
                return self.error(path, f"expected true or false, got {_describe(value)}")
            return value
        if tp is str:
            if isinstance(value, dict) and self.on_mapping:
                return self.error(path, self.on_mapping)
            if isinstance(value, (dict, list)) or value is None:
                return self.error(path, f"expected a string, got {_describe(value)}")
            if isinstance(value, bool):
                return self.error(path, f"expected a string, got {_describe(value)}; quote it")
            return str(value)
        raise TypeError(f"unsupported model type {tp!r}")  # a programming error

    def build_dataclass(self, cls: Any, value: Any, path: Path) -> Any:
        if not isinstance(value, dict):
            return self.error(path, f"expected a mapping, got {_describe(value)}")
        hints, fields = _model_fields(cls)
        kwargs: dict[str, Any] = {}
        suggested: set[str] = set()
        for key in value:
            if key not in fields:
                near = suggest(key, fields)
                suggested.add(near.split("'")[1] if near else "")
                if _SECRET_KEY.search(key) and not key.endswith("_secret"):
                    where = (f"name that file with '{key}_secret'" if f"{key}_secret" in fields
                             else "name that file here instead")
                    self.error((*path, key), "a plaintext secret does not belong in the site "
                               f"file: put it in a file of the secrets folder and {where}")
                else:
                    self.error((*path, key), "unknown key" + near)
        failed = False
        for name, f in fields.items():
            if name in value:
                self.on_mapping = f.metadata.get("on_mapping")
                built = self.build(hints[name], value[name], (*path, name))
                self.on_mapping = None
                pattern = f.metadata.get("pattern")
                if isinstance(built, str) and pattern and not re.search(pattern, built):
                    built = self.error((*path, name), f"{built!r} does not match {pattern}")
                if built is MISSING:
                    failed = True
                else:
                    kwargs[name] = built
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if name not in suggested:  # a misspelt key already says "did you mean"
                    self.error(path, f"missing required key '{name}'")
                failed = True
        if failed or len(self.findings):
            return MISSING
        return cls(**kwargs)


def load_site(path: str | os.PathLike[str]) -> Site:
    """Read and type-check a site file; raise InputError listing every problem."""
    path = FsPath(path)
    data, marks = read_yaml(path)
    builder = _Builder(marks)
    site = builder.build_dataclass(Site, data, ())
    raise_errors(builder.findings)
    return dataclasses.replace(site, marks=marks)
