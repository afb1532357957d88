"""LDIF (RFC 2849): entries as data, written deterministically in the order given."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailstack.ldap.dn import DN


@dataclass(frozen=True)
class Entry:
    dn: DN
    attrs: tuple[tuple[str, str], ...]

    def values(self, attr: str) -> list[str]:
        return [v for a, v in self.attrs if a.lower() == attr.lower()]

    def as_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a, v in self.attrs:
            out.setdefault(a, []).append(v)
        return out


def _safe(value: str) -> bool:
    if value == "":
        return True
    if not value.isascii() or value[0] in " :<" or value.endswith(" "):
        return False
    return not any(c in value for c in "\x00\r\n")


def line(attr: str, value: str) -> str:
    """One ``attr: value`` line, base64 (``attr:: ...``) when the value is not a safe string."""
    if _safe(value):
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode()).decode()}"


def entry_lines(entry: Entry) -> list[str]:
    return [line("dn", str(entry.dn)), *(line(a, v) for a, v in entry.attrs)]


def dumps(entries: Iterable[Entry], *, header: Sequence[str] = ()) -> str:
    """Entries as LDIF text, a blank line between entries, ``# header`` lines first."""
    blocks = ["\n".join(f"# {h}" if h else "#" for h in header)] if header else []
    blocks += ["\n".join(entry_lines(e)) for e in entries]
    return "\n\n".join(blocks) + "\n"
