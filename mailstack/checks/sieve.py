"""Sieve: the site's rules need what they name; a shared folder's address is its own account."""

from __future__ import annotations

from collections.abc import Iterator

from mailstack.findings import Finding
from mailstack.site.marks import Path
from mailstack.site.model import Site


def check(site: Site) -> Iterator[Finding]:
    def find(path: Path, message: str, severity: str = "error") -> Finding:
        return Finding(site.marks.at(path), path, message, severity)  # type: ignore[arg-type]

    if site.sieve.spam_header and not any(f.special_use == "junk" for f in site.folders):
        yield find(("sieve", "spam_header"), "no folder has special_use: junk, so spam is not "
                                             "filed anywhere: add one to folders or set null",
                   "warning")
    for i, account in enumerate(site.accounts):
        if account.vacation is not None and account.vacation.days < 1:
            yield find(("accounts", i, "vacation", "days"),
                       f"{account.vacation.days}: a sender gets one reply in this many days: "
                       "use 1 or more")
    # a shared folder's address taken by an account or alias: checks/folders.py
