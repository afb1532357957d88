"""LDAP search filters (RFC 4515): the one place filters are built and values escaped.

Filters are small trees; ``render`` turns them into the string a daemon's config needs. A
:class:`Placeholder` stands for the daemon's own lookup key (``%u`` for Dovecot, ``%s`` for
Postfix), which the daemon itself escapes; literal ``%`` in values is written ``%%`` for both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def escape(value: str) -> str:
    """Escape an assertion value (RFC 4515 section 3)."""
    out = []
    for ch in value:
        if ch in "*()\\\x00":
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class Placeholder:
    """The daemon's lookup key, e.g. ``%u`` (Dovecot) or ``%s`` (Postfix)."""

    token: str


@dataclass(frozen=True)
class Eq:
    attr: str
    value: str | Placeholder


@dataclass(frozen=True)
class Present:
    attr: str


@dataclass(frozen=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    part: Filter


Filter = Eq | Present | And | Or | Not


def and_(*parts: Filter) -> Filter:
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def render(f: Filter, *, percent: bool = True) -> str:
    """The filter as a string; ``percent`` doubles literal % for Postfix/Dovecot configs."""
    if isinstance(f, Eq):
        if isinstance(f.value, Placeholder):
            value = f.value.token
        else:
            value = escape(f.value)
            if percent:
                value = value.replace("%", "%%")
        return f"({f.attr}={value})"
    if isinstance(f, Present):
        return f"({f.attr}=*)"
    if isinstance(f, And):
        return "(&" + "".join(render(p, percent=percent) for p in f.parts) + ")"
    if isinstance(f, Or):
        return "(|" + "".join(render(p, percent=percent) for p in f.parts) + ")"
    if isinstance(f, Not):
        return "(!" + render(f.part, percent=percent) + ")"
    raise TypeError(f)


def substitute(f: Filter, value: str, token: str | None = None) -> Filter:
    """The filter with its placeholders (only those spelled ``token``, if given) replaced by a
    concrete value (for probes and the ACL matrix)."""
    if isinstance(f, Eq):
        if isinstance(f.value, Placeholder) and token in (None, f.value.token):
            return Eq(f.attr, value)
        return f
    if isinstance(f, And):
        return And(tuple(substitute(p, value, token) for p in f.parts))
    if isinstance(f, Or):
        return Or(tuple(substitute(p, value, token) for p in f.parts))
    if isinstance(f, Not):
        return Not(substitute(f.part, value, token))
    return f


def attributes(f: Filter) -> set[str]:
    """Every attribute the filter asserts on (these need search access and an index)."""
    if isinstance(f, (Eq, Present)):
        return {f.attr}
    if isinstance(f, (And, Or)):
        return set().union(*(attributes(p) for p in f.parts))
    if isinstance(f, Not):
        return attributes(f.part)
    raise TypeError(f)


def equality_attributes(f: Filter) -> set[str]:
    if isinstance(f, Eq):
        return {f.attr}
    if isinstance(f, (And, Or)):
        return set().union(*(equality_attributes(p) for p in f.parts))
    if isinstance(f, Not):
        return equality_attributes(f.part)
    return set()


class Normalized(dict[str, tuple[str, ...]]):
    """An entry as filters see it: attribute names and values lower-cased, each attribute's
    values distinct and sorted (a tuple: most attributes hold one value, and a one-value tuple
    takes a fifth of a frozenset's memory, which counts at 10,000 accounts). Made once per
    entry (:func:`normalize`) when many filters are asked of it."""


def normalize(entry: dict[str, list[str]] | Normalized) -> Normalized:
    if isinstance(entry, Normalized):
        return entry
    return normalize_pairs((k, v) for k, vs in entry.items() for v in vs)


def normalize_pairs(pairs: Iterable[tuple[str, str]]) -> Normalized:
    """An entry given as (attribute, value) pairs (ldif.Entry.attrs), normalized."""
    sets: dict[str, set[str]] = {}
    for k, v in pairs:
        key = k.lower()
        found = sets.get(key)
        if found is None:
            sets[key] = {v.lower()}
        else:
            found.add(v.lower())
    out = Normalized()
    for key, values in sets.items():
        out[key] = (next(iter(values)),) if len(values) == 1 else tuple(sorted(values))
    return out


def matches(f: Filter, entry: dict[str, list[str]] | Normalized) -> bool:
    """Evaluate the filter on an entry (case-insensitive values; for checks and tests)."""
    return _matches(f, normalize(entry))


def _matches(f: Filter, lower: Normalized) -> bool:
    if isinstance(f, Eq):
        if isinstance(f.value, Placeholder):
            raise ValueError("substitute placeholders first")
        return f.value.lower() in lower.get(f.attr.lower(), ())
    if isinstance(f, Present):
        return f.attr.lower() in lower
    if isinstance(f, And):
        return all(_matches(p, lower) for p in f.parts)
    if isinstance(f, Or):
        return any(_matches(p, lower) for p in f.parts)
    if isinstance(f, Not):
        return not _matches(f.part, lower)
    raise TypeError(f)


def _unescape(value: str) -> str:
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "\\":
            try:
                out.append(int(value[i + 1:i + 3], 16))
            except ValueError:
                raise ValueError(f"bad escape in '{value}'") from None
            i += 3
        else:
            out += value[i].encode()
            i += 1
    return out.decode("utf-8")


def parse(text: str) -> Filter:
    """Parse the RFC 4515 subset mailstack uses: &, |, !, equality and presence."""
    f, rest = _parse(text.strip())
    if rest:
        raise ValueError(f"text after the filter: '{rest}'")
    return f


def _parse(text: str) -> tuple[Filter, str]:
    if not text.startswith("("):
        raise ValueError(f"expected '(' at '{text}'")
    body = text[1:]
    if body[:1] in ("&", "|"):
        parts: list[Filter] = []
        rest = body[1:]
        while rest.startswith("("):
            part, rest = _parse(rest)
            parts.append(part)
        if not rest.startswith(")") or not parts:
            raise ValueError("unbalanced parentheses")
        return (And if body[0] == "&" else Or)(tuple(parts)), rest[1:]
    if body[:1] == "!":
        part, rest = _parse(body[1:])
        if not rest.startswith(")"):
            raise ValueError("unbalanced parentheses")
        return Not(part), rest[1:]
    end = body.find(")")
    if end < 0:
        raise ValueError("unbalanced parentheses")
    item, rest = body[:end], body[end + 1:]
    attr, eq, value = item.partition("=")
    if not eq or not attr or attr[-1] in "<>~:":
        raise ValueError(f"only equality and presence are supported, not '({item})'")
    if value == "*":
        return Present(attr), rest
    if "*" in value:
        raise ValueError(f"substring filters are not supported: '({item})'")
    return Eq(attr, _unescape(value)), rest
