"""Groups and distribution lists: names, members, cycles, addresses, who may send as a list."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from mailstack.findings import Finding, suggest
from mailstack.site.marks import Path
from mailstack.site.model import Site

Err = Callable[[Path, str], Finding]


def check(site: Site) -> Iterator[Finding]:
    def err(path: Path, message: str) -> Finding:
        return Finding(site.marks.at(path), path, message, "error")

    accounts = {a.mail.lower() for a in site.accounts}
    names: dict[str, int] = {}
    for i, group in enumerate(site.groups):
        if group.name in names:
            first = site.marks.at(("groups", names[group.name], "name")).line
            yield err(("groups", i, "name"), f"duplicate group '{group.name}' (first used at "
                                             f"line {first})")
        else:
            names[group.name] = i
    known = sorted(set(names) | accounts)

    def unknown(word: str, path: Path, what: str) -> Finding:
        hint = suggest(word.lower(), known)
        return err(path, f"'{word}' is no account or group of the site ({what}){hint}")

    for i, group in enumerate(site.groups):
        if not group.members:
            yield err(("groups", i, "members"), "a group needs at least one member (groupOfNames "
                                                "requires one)")
        seen: set[str] = set()
        for j, member in enumerate(group.members):
            if member not in names and member.lower() not in accounts:
                yield unknown(member, ("groups", i, "members", j), "members")
            if member.lower() in seen:
                yield err(("groups", i, "members", j), f"'{member}' is listed twice")
            seen.add(member.lower())
        for j, who in enumerate(group.send_as):
            if who not in names and who.lower() not in accounts:
                yield unknown(who, ("groups", i, "send_as", j), "send_as")
        if not group.address:
            if group.post != "site":
                yield err(("groups", i, "post"), "only a group with an address (a list) takes "
                                                 "postings: add an address or remove post")
            if group.send_as:
                yield err(("groups", i, "send_as"), "only a group with an address (a list) can "
                                                    "be sent as: add an address or remove send_as")
    yield from _cycles(site, names, err)
    yield from _addresses(site, err)


def _cycles(site: Site, names: dict[str, int], err: Err) -> Iterator[Finding]:
    """A group that contains itself, directly or through others (Postfix would loop, and
    membership would have no end)."""
    reported: set[str] = set()
    for start in names:
        stack: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
        while stack:
            name, path = stack.pop()
            for member in site.groups[names[name]].members:
                if member not in names:
                    continue
                if member == start:
                    if start not in reported:
                        reported.add(start)
                        cycle = " -> ".join((*path, start))
                        yield err(("groups", names[start], "members"),
                                  f"group '{start}' contains itself ({cycle})")
                    continue
                if member not in path:
                    stack.append((member, (*path, member)))


def _addresses(site: Site, err: Err) -> Iterator[Finding]:
    """A list's address: in a site domain, and no one else's (account, alias, another list,
    a shared folder)."""
    local = {d.lower() for d in site.domains}
    taken: dict[str, str] = {}
    for a in site.accounts:
        taken.setdefault(a.mail.lower(), f"account {a.mail}")
        for x in a.aliases:
            taken.setdefault(x.lower(), f"an alias of {a.mail}")
    for alias in site.aliases:
        taken.setdefault(alias.address.lower(), "an alias")
    for folder in site.shared_folders:
        if folder.address:
            taken.setdefault(folder.address.lower(), f"shared folder {folder.name}")
    for i, group in enumerate(site.groups):
        if not group.address:
            continue
        path = ("groups", i, "address")
        key = group.address.lower()
        if key.rpartition("@")[2] not in local:
            yield err(path, f"'{group.address}' is not in one of the site's domains "
                            f"({', '.join(site.domains)})")
        if key in taken:
            yield err(path, f"'{group.address}' is already {taken[key]}")
        else:
            taken[key] = f"group {group.name}'s address"
