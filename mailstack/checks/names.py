"""Names and addresses: domains, host names, addresses, DNs, duplicates, where aliases point."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator

from mailstack.findings import Finding
from mailstack.ldap.dn import DNError, dn
from mailstack.site.marks import Path
from mailstack.site.model import Protocol, Site
from mailstack.site.sizes import SizeError, parse_size

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}\Z", re.IGNORECASE)
_LOCAL = re.compile(r"[A-Za-z0-9!#$&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$&'*+/=?^_`{|}~-]+)*\Z")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


HOST_KEY = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
"""A host's short name: it names files (tls/<host>.crt, build/<site>/<host>/)."""


def host_key_message(name: str) -> str:
    return f"host name '{name}' must be lowercase letters, digits, -"


def valid_domain(name: str) -> bool:
    return bool(_DOMAIN.match(name)) and len(name) <= 253


def valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at) and bool(_LOCAL.match(local)) and len(local) <= 64 and valid_domain(domain)


def _multiline(path: Path) -> bool:
    """Texts that go into files of their own (plan/sieve.py: Sieve scripts, where a line break
    is just white space or part of a quoted string), never into a configuration line."""
    return path == ("sieve", "before") or path[-2:] == ("vacation", "text")


def _unsafe_strings(value: object, path: Path) -> Iterator[Path]:
    if isinstance(value, str):
        if _UNSAFE.search(value.replace("\n", " ").replace("\t", " ") if _multiline(path)
                          else value):
            yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _unsafe_strings(v, (*path, k))
    elif isinstance(value, tuple):
        for i, v in enumerate(value):
            yield from _unsafe_strings(v, (*path, i))
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            if name != "marks":
                yield from _unsafe_strings(getattr(value, name), (*path, name))


ALL_PROTOCOLS = typing.get_args(Protocol)
ROLE_ADDRESSES = (("postmaster", "RFC 5321 requires it"),
                  ("abuse", "RFC 2142: where the Internet reports abuse"))
"""Addresses every mail domain must deliver: the site names who reads them."""


def check(site: Site) -> Iterator[Finding]:
    def err(path: Path, message: str, severity: str = "error") -> Finding:
        return Finding(site.marks.at(path), path, message, severity)  # type: ignore[arg-type]

    for path in _unsafe_strings(site, ()):
        yield err(path, "contains a line break or control character, which would break the "
                        "configuration files it goes into")
    local = {d.lower() for d in site.domains}
    if not site.domains:
        yield err(("domains",), "at least one mail domain is needed")
    seen_domains: set[str] = set()
    for i, domain in enumerate(site.domains):
        if not valid_domain(domain):
            yield err(("domains", i), f"'{domain}' is not a valid domain name")
        if domain.lower() in seen_domains:
            yield err(("domains", i), f"duplicate domain '{domain}'")
        seen_domains.add(domain.lower())
    try:
        base = dn(site.ldap.base)
        if not base.rdns:
            yield err(("ldap", "base"), "the suffix cannot be empty")
        elif base.rdns[0][0][0].lower() not in ("dc", "o", "ou"):
            yield err(("ldap", "base"), "the suffix must start with dc=, o= or ou=")
    except DNError as e:
        yield err(("ldap", "base"), f"'{site.ldap.base}' is not a valid DN (RFC 4514): {e}")

    # hosts and roles
    if not site.hosts:
        yield err(("hosts",), "at least one host is needed")
    for name, host in site.hosts.items():
        if not HOST_KEY.match(name):
            yield err(("hosts", name), host_key_message(name))
        if not valid_domain(host.hostname):
            yield err(("hosts", name, "hostname"), f"'{host.hostname}' is not a fully qualified "
                                                    "host name")
        elif host.hostname.lower() in local:
            yield err(("hosts", name, "hostname"), "a host name cannot be one of the site's mail "
                                                    "domains (Postfix would treat it as both)")
        for r, role in enumerate(host.roles):
            if host.roles.index(role) != r:
                yield err(("hosts", name, "roles", r), f"duplicate role '{role}'")
    for role in ("ldap", "mta", "imap"):
        holders = [n for n, h in site.hosts.items() if role in h.roles]
        if site.hosts and not holders:
            yield err(("hosts",), f"no host has the role '{role}'"
                                  + (" (ldap-provider)" if role == "ldap" else ""))
        elif role == "ldap" and len(holders) > 1:
            yield err(("hosts", holders[1], "roles"), "only one host may hold the directory's "
                      f"provider (found {', '.join(holders)}): the others are ldap-replica")
    for name, host in site.hosts.items():
        roles = set(host.roles)
        if ("mta" in roles) != ("imap" in roles):
            yield err(("hosts", name, "roles"), "the mta and imap roles must share a host "
                                                "(Postfix hands mail to Dovecot over a local socket)")
        if {"ldap", "ldap-replica"} <= roles:
            yield err(("hosts", name, "roles"), "a host holds the provider or a replica of "
                                                "the directory, not both")
        if "relay" in roles and "mta" not in roles:
            yield err(("hosts", name, "roles"), "the relay role needs the mta and imap roles on "
                                                "the same host (a relay without mailboxes is "
                                                "not built yet)")
    relays_ = [n for n, h in site.hosts.items() if "relay" in h.roles]
    if len(relays_) > 1:
        yield err(("hosts", relays_[1], "roles"), "only one host may have the role 'relay' "
                                                  f"(found {', '.join(relays_)})")
    mail_hosts = sorted(n for n, h in site.hosts.items() if {"mta", "imap"} <= set(h.roles))
    if len(mail_hosts) > 1 and not relays_:
        yield err(("hosts",), f"several hosts keep mailboxes ({', '.join(mail_hosts)}): one of "
                              "them needs the role 'relay', which carries mail between them")
    if len(mail_hosts) > 1:
        for key, why in (("shared_folders", "a shared folder"), ("fetch", "a remote mailbox")):
            if getattr(site, key):
                yield err((key,), f"{why} on a site with several mail hosts is not built yet "
                                  "(it needs a home of its own)")
        if site.clients.serve:
            yield err(("clients", "serve"), "client settings on a site with several mail "
                                            "hosts are not built yet (each account's servers "
                                            "are its home's)")

    # accounts and aliases
    addresses: dict[str, Path] = {}

    def claim(address: str, path: Path) -> Iterator[Finding]:
        key = address.lower()
        if not valid_address(address):
            yield err(path, f"'{address}' is not a valid mail address")
            return
        if key.rpartition("@")[2] not in local:
            yield err(path, f"'{address}' is not in one of the site's domains "
                            f"({', '.join(site.domains)})")
        if key in addresses:
            first = site.marks.at(addresses[key])
            yield err(path, f"duplicate address '{address}' (first used at line {first.line})")
        else:
            addresses[key] = path

    for i, account in enumerate(site.accounts):
        yield from claim(account.mail, ("accounts", i, "mail"))
        if not account.name.strip():
            yield err(("accounts", i, "name"), "the name cannot be empty")
        if len(set(account.protocols)) != len(account.protocols):
            yield err(("accounts", i, "protocols"), "a service is listed twice")
        if account.quota is not None:
            try:
                parse_size(account.quota)
            except SizeError as error:
                yield err(("accounts", i, "quota"), str(error))
        for j, address in enumerate(account.aliases):
            yield from claim(address, ("accounts", i, "aliases", j))
        if account.mailhost is not None and account.mailhost not in mail_hosts:
            yield err(("accounts", i, "mailhost"), f"'{account.mailhost}' is not a host with "
                      "the mta and imap roles" + _near_host(account.mailhost, mail_hosts))
        elif account.mailhost is None and len(mail_hosts) > 1:
            yield err(("accounts", i), f"several hosts keep mailboxes ({', '.join(mail_hosts)}):"
                                       " say which one keeps this account's (mailhost)")
    for i, alias in enumerate(site.aliases):
        yield from claim(alias.address, ("aliases", i, "address"))
        if not alias.to:
            yield err(("aliases", i, "to"), "an alias must point somewhere")
    for i, alias in enumerate(site.aliases):
        for j, target in enumerate(alias.to):
            path = ("aliases", i, "to", j)
            if not valid_address(target):
                yield err(path, f"'{target}' is not a valid mail address")
            elif target.lower().rpartition("@")[2] in local and target.lower() not in addresses:
                hint = _near(target, addresses)
                yield err(path, f"'{target}' points nowhere: no account or alias has that "
                                f"address{hint}")
            elif target.lower() == alias.address.lower():
                yield err(path, "an alias cannot point to itself")
    if site.quota.default is not None:
        try:
            parse_size(site.quota.default)
        except SizeError as error:
            yield err(("quota", "default"), str(error))
    if not 1 <= site.quota.warning <= 100:
        yield err(("quota", "warning"), f"a percentage from 1 to 100, got {site.quota.warning}")
    if site.ldap.password_policy.min_length < 8:
        yield err(("ldap", "password_policy", "min_length"),
                  f"{site.ldap.password_policy.min_length} is too short: at least 8")
    probe = next((a for a in site.accounts
                  if site.verify.probe and a.mail.lower() == site.verify.probe.lower()), None)
    if probe is not None and (not probe.enabled
                              or not {"imap", "submission"} <= set(probe.protocols)):
        yield err(("verify", "probe"), f"'{probe.mail}' must be enabled and may use imap and "
                                       "submission: verify reads and sends as it")
    if site.verify.probe is not None and site.verify.probe.lower() not in {
            a.mail.lower() for a in site.accounts}:
        yield err(("verify", "probe"), f"'{site.verify.probe}' is not an account of the site: "
                                       "verify's probe account is created like any account"
                                       f"{_near(site.verify.probe, addresses)}")
    remote = [n for n, h in site.hosts.items() if "ldap" not in h.roles]
    if site.ldap.network is False and remote:
        yield err(("ldap", "network"), f"host {remote[0]} reads the directory over the network: "
                                       "slapd must listen on port 389 (remove the key)")
    for i, domain in enumerate(site.domains):
        for local_part, why in ROLE_ADDRESSES:
            if site.accounts and f"{local_part}@{domain.lower()}" not in addresses:
                yield err(("domains", i), f"no one receives {local_part}@{domain} ({why}): add "
                                          "it to the aliases of the account that reads it")


def _near_host(word: str, hosts: list[str]) -> str:
    from mailstack.findings import suggest

    return suggest(word, hosts)


def _near(word: str, choices: dict[str, Path]) -> str:
    from mailstack.findings import suggest

    return suggest(word.lower(), choices)
