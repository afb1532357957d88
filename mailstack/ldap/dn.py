"""Distinguished names (RFC 4514): the one place DNs are parsed, escaped and built.

A :class:`DN` is a tuple of RDNs, each a tuple of (type, value) pairs with *unescaped* values.
``str(dn)`` gives the RFC 4514 string; comparisons ignore the case of types and values
(good enough for the directory strings used here, which are caseIgnore in the schemas we load).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

_DESCR = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
_NUMERICOID = re.compile(r"[0-9]+(\.[0-9]+)+\Z")
_HEX = "0123456789abcdefABCDEF"


class DNError(ValueError):
    """A string is not a valid RFC 4514 DN (the message says why)."""


_NEEDS_ESCAPE = re.compile(r'["+,;<>\\=\x00]|\A[# ]| \Z')


def escape_value(value: str) -> str:
    """Escape an attribute value for use in a DN string (RFC 4514 section 2.4)."""
    if not _NEEDS_ESCAPE.search(value):
        return value
    out = []
    for i, ch in enumerate(value):
        if ch in '"+,;<>\\=':
            out.append("\\" + ch)
        elif ch == "\x00":
            out.append("\\00")
        elif (ch == "#" and i == 0) or (ch == " " and (i == 0 or i == len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class DN:
    rdns: tuple[tuple[tuple[str, str], ...], ...]

    @classmethod
    def parse(cls, text: str) -> DN:
        return cls(tuple(_parse(text)))

    def __str__(self) -> str:
        return self.text

    @cached_property
    def text(self) -> str:
        return ",".join("+".join(f"{t}={escape_value(v)}" for t, v in rdn) for rdn in self.rdns)

    def child(self, attr: str, value: str) -> DN:
        """The DN of an entry named ``attr=value`` directly below this one."""
        if not _DESCR.match(attr):
            raise DNError(f"invalid attribute type {attr!r}")
        return DN((((attr, value),), *self.rdns))

    @property
    def parent(self) -> DN:
        return DN(self.rdns[1:])

    @property
    def rdn_value(self) -> str:
        return self.rdns[0][0][1]

    def key(self) -> tuple:
        return self._key

    @cached_property
    def _key(self) -> tuple:
        return tuple(tuple(sorted((t.lower(), v.lower()) for t, v in rdn)) for rdn in self.rdns)

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, DN) and self._key == other._key)

    def __hash__(self) -> int:
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash(self._key)

    def is_within(self, other: DN) -> bool:
        """True if this DN is ``other`` or below it."""
        n = len(other.rdns)
        return n == 0 or (len(self.rdns) >= n and self._key[len(self.rdns) - n:] == other._key)

    def is_below(self, other: DN) -> bool:
        """True if this DN is strictly below ``other``."""
        return self.is_within(other) and len(self.rdns) > len(other.rdns)


@lru_cache(maxsize=65536)
def dn(text: str) -> DN:
    """Parse a DN (cached: checks ask about the same DNs many times)."""
    return DN.parse(text)


def _parse(text: str) -> list[tuple[tuple[str, str], ...]]:
    if text == "":
        return []
    if "\n" in text or "\r" in text:
        raise DNError("a DN cannot contain a line break")
    rdns: list[tuple[tuple[str, str], ...]] = []
    avas: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        eq = text.find("=", i)
        if eq < 0:
            raise DNError(f"'{text[i:]}' has no '=' (expected type=value)")
        attr = text[i:eq].strip()
        if not (_DESCR.match(attr) or _NUMERICOID.match(attr)):
            raise DNError(f"'{attr}' is not an attribute type")
        i = eq + 1
        value, i = _parse_value(text, i)
        avas.append((attr, value))
        if i >= n:
            rdns.append(tuple(avas))
            return rdns
        sep = text[i]
        i += 1
        if sep == ",":
            rdns.append(tuple(avas))
            avas = []
        elif sep != "+":
            raise DNError(f"unexpected {sep!r} at position {i}")
        if i >= n:
            raise DNError("the DN ends with a separator")


def _parse_value(text: str, i: int) -> tuple[str, int]:
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i < n and text[i] == "#":
        j = i + 1
        while j < n and text[j] in _HEX:
            j += 1
        hexpart = text[i + 1:j]
        if not hexpart or len(hexpart) % 2:
            raise DNError("a #hex value needs an even number of hex digits")
        return "#" + hexpart, j
    raw = bytearray()
    kept = 0  # length of raw up to the last escaped or non-space byte
    while i < n:
        ch = text[i]
        if ch in ",+":
            break
        if ch == "\\":
            if i + 1 >= n:
                raise DNError("a DN cannot end with a backslash")
            nxt = text[i + 1]
            if nxt in _HEX and i + 2 < n and text[i + 2] in _HEX:
                raw.append(int(text[i + 1:i + 3], 16))
                i += 3
            elif nxt in ' "#+,;<=>\\':
                raw += nxt.encode()
                i += 2
            else:
                raise DNError(f"invalid escape '\\{nxt}'")
            kept = len(raw)
            continue
        if ch in '";<>' or ch == "\x00":
            raise DNError(f"{ch!r} must be escaped in a DN value")
        raw += ch.encode()
        if ch != " ":
            kept = len(raw)
        i += 1
    try:
        value = bytes(raw[:kept]).decode("utf-8")
    except UnicodeDecodeError:
        raise DNError("an escaped value is not UTF-8") from None
    if value == "":
        raise DNError("an attribute value is empty")
    return value, i
