"""The folder tree and shared folders: names Dovecot can keep, roles once, rights for someone."""

from __future__ import annotations

from collections.abc import Iterator

from mailstack.findings import Finding, suggest
from mailstack.plan import folders as pf
from mailstack.site.marks import Path
from mailstack.site.model import Site


def check(site: Site) -> Iterator[Finding]:
    def find(path: Path, message: str, severity: str = "error") -> Finding:
        return Finding(site.marks.at(path), path, message, severity)  # type: ignore[arg-type]

    seen: dict[str, int] = {}
    roles: dict[str, int] = {}
    for i, folder in enumerate(site.folders):
        problem = pf.name_problem(folder.name)
        if problem:
            yield find(("folders", i, "name"), f"'{folder.name}': {problem}")
        key = folder.name.casefold()
        if key in seen:
            yield find(("folders", i, "name"),
                       f"folder '{folder.name}' is already folders[{seen[key]}]")
        seen.setdefault(key, i)
        if folder.special_use:
            if folder.special_use in roles:
                yield find(("folders", i, "special_use"),
                           f"special_use {folder.special_use} is already folders"
                           f"[{roles[folder.special_use]}]'s: one folder per role")
            roles.setdefault(folder.special_use, i)

    groups = {g.name for g in site.groups}
    accounts = {a.mail.lower() for a in site.accounts}
    aliases = {a.address.lower() for a in site.aliases} | \
        {x.lower() for a in site.accounts for x in a.aliases}
    names: dict[str, int] = {}
    for i, shared in enumerate(site.shared_folders):
        base: Path = ("shared_folders", i)
        problem = pf.name_problem(shared.name)
        if problem:
            yield find((*base, "name"), f"'{shared.name}': {problem}")
        key = shared.name.casefold()
        if key in names:
            yield find((*base, "name"),
                       f"shared folder '{shared.name}' is already shared_folders[{names[key]}]")
        names.setdefault(key, i)
        if shared.owner != "public":
            yield find((*base, "owner"),
                       f"owner {shared.owner}: an account as owner is not supported yet; use "
                       "public (the folder appears as Public/NAME to those with rights)")
        if not shared.rights:
            yield find((*base, "rights"), "nobody has any right: nobody would see the folder")
        for who, rights in shared.rights.items():
            if who not in groups and who.lower() not in accounts:
                yield find((*base, "rights", who),
                           f"'{who}' is neither a group nor an account"
                           f"{suggest(who, groups | accounts)}")
            for right in rights:
                if right not in pf.RIGHTS:
                    yield find((*base, "rights", who),
                               f"unknown right '{right}'{suggest(right, pf.RIGHTS)}")
        if shared.address:
            address = shared.address.lower()
            if address in accounts:
                yield find((*base, "address"),
                           f"{shared.address} is an account: a shared folder's address "
                           "must be its own")
            elif address in aliases:
                yield find((*base, "address"), f"{shared.address} is already an alias")
            elif shared.address.rpartition("@")[2].lower() not in \
                    {d.lower() for d in site.domains}:
                yield find((*base, "address"),
                           f"{shared.address} is not in the site's domains")
            other = [j for j, s in enumerate(site.shared_folders)
                     if j < i and s.address and s.address.lower() == address]
            if other:
                yield find((*base, "address"),
                           f"{shared.address} is already shared_folders[{other[0]}]'s")
