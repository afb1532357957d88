"""Findings: what `check` reports, one line each, `FILE:LINE: key.path: message`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mailstack.errors import InputError
from mailstack.site.marks import Mark, Path, format_path

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Finding:
    mark: Mark
    path: Path
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        return f"{self.mark}: {format_path(self.path)}: {prefix}{self.message}"


@dataclass(frozen=True)
class Check:
    """One named PASS/FAIL of a live check (the daemons' checkers, verify), with its evidence."""

    name: str
    host: str
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        head = f"{'PASS' if self.ok else 'FAIL'}  {self.host}: {self.name}"
        return head if self.ok or not self.detail else f"{head}\n      {self.detail}"


def suggest(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the nearest choice, or nothing."""
    near = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{near[0]}'?" if near else ""


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(set(findings), key=lambda f: (f.mark.file, f.mark.line, format_path(f.path), f.message))


def raise_errors(findings: Iterable[Finding]) -> None:
    """Raise one InputError listing every error finding, if there is one."""
    errors = [f for f in sort_findings(findings) if f.severity == "error"]
    if errors:
        raise InputError("\n".join(str(f) for f in errors))
