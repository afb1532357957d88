"""Where things run when a site has several hosts: the provider, its replicas, the mail hosts,
the relay between them, and each account's home (``mailhost``).

One server (the branch-office example) is the degenerate case: one mail host, no replica, no
relay; every function here then answers so that nothing downstream changes. With several mail
hosts (a head office and branches) every account has a home: only its home's Postfix delivers
it and only its home's Dovecot logs it in; the others send its mail there through the relay,
the route being read from the directory (``mailstackMailHost``), not written by hand.
"""

from __future__ import annotations

from mailstack.site.model import Account, Site

ROLE_ORDER = ("ldap", "ldap-replica", "mta", "imap", "relay")
"""The manifest's role names, in the order the plan and apply take them (the provider is
``ldap``: the site file may spell it ``ldap-provider``)."""


def roles(site: Site, name: str) -> tuple[str, ...]:
    return tuple(r for r in ROLE_ORDER if r in site.hosts[name].roles)


def with_role(site: Site, role: str) -> list[str]:
    """The hosts with ``role``, by name."""
    return [name for name, h in sorted(site.hosts.items()) if role in h.roles]


def provider(site: Site) -> str:
    return with_role(site, "ldap")[0]


def replicas(site: Site) -> list[str]:
    return with_role(site, "ldap-replica")


def mail_hosts(site: Site) -> list[str]:
    """The hosts that keep mailboxes (mta and imap: Postfix hands mail to Dovecot locally)."""
    return [n for n in with_role(site, "mta") if "imap" in site.hosts[n].roles]


def several_homes(site: Site) -> bool:
    """Whether accounts live on more than one host (the lookups then ask for the home)."""
    return len(mail_hosts(site)) > 1


def relay_host(site: Site) -> str | None:
    found = with_role(site, "relay")
    return found[0] if found else None


def home(site: Site, account: Account) -> str:
    """The host key of the account's home: its ``mailhost``, else the only mail host."""
    if account.mailhost is not None:
        return account.mailhost
    return mail_hosts(site)[0]


def home_name(site: Site, account: Account) -> str:
    """The home's host name (lower case): what the directory stores in mailstackMailHost."""
    return site.hosts[home(site, account)].hostname.lower()


def has_local_directory(site: Site, name: str) -> bool:
    """Whether host ``name`` runs slapd with the site's tree (the provider or a replica)."""
    return bool({"ldap", "ldap-replica"} & set(site.hosts[name].roles))


def limit_hosts(site: Site, limit: str) -> list[str]:
    """``apply --limit``: host keys and role names (``tomsk,relay``; the site file's spellings,
    ``ldap-provider`` too), as the site's host keys in order. Ansible's own groups by role are
    made while the playbook runs, too late for its --limit, so roles are resolved here."""
    from mailstack.errors import InputError
    from mailstack.findings import suggest
    from mailstack.site.model import PROVIDER_SPELLINGS

    chosen: set[str] = set()
    for word in (w.strip() for w in limit.split(",")):
        if not word:
            continue
        if word in site.hosts:
            chosen.add(word)
            continue
        role = "ldap" if word in PROVIDER_SPELLINGS else word
        holders = with_role(site, role) if role in ROLE_ORDER else []
        if not holders:
            known = [*site.hosts, *ROLE_ORDER, "ldap-provider"]
            raise InputError(f"--limit: '{word}' is neither a host of the site "
                             f"({', '.join(sorted(site.hosts))}) nor a role one of them has"
                             f"{suggest(word, known)}")
        chosen.update(holders)
    if not chosen:
        raise InputError("--limit: name at least one host or role")
    return sorted(chosen)
