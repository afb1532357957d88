"""Relays: the default names a relay, each relay is well-formed and is not this site itself."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from mailstack.checks.names import valid_address, valid_domain
from mailstack.findings import Finding, suggest
from mailstack.plan import fetch as fetch_plan
from mailstack.site.marks import Path
from mailstack.site.model import Site


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def check(site: Site) -> Iterator[Finding]:
    def err(path: Path, message: str) -> Finding:
        return Finding(site.marks.at(path), path, message)

    default = site.relay.default
    if default != "direct" and default not in site.relays:
        yield err(("relay", "default"), f"no relay named '{default}' under relays:"
                  + (suggest(default, [*site.relays, "direct"]) or
                     " (use a relay's name, or 'direct')"))
    own = {h.hostname.lower() for h in site.hosts.values()} | {d.lower() for d in site.domains}
    for name, relay in sorted(site.relays.items()):
        path: Path = ("relays", name)
        if not (is_ip(relay.host) or valid_domain(relay.host)):
            yield err((*path, "host"), f"'{relay.host}' is neither an IP address nor a host name")
        if relay.host.lower() in own:
            yield err((*path, "host"), f"'{relay.host}' is this site itself: mail sent there "
                                       "would loop")
        if not 1 <= relay.port <= 65535:
            yield err((*path, "port"), f"{relay.port} is not a TCP port")
        if relay.tls in ("verify", "wrapper") and is_ip(relay.host) and not relay.tls_name:
            yield err((*path, "tls_name"), f"the relay is named by IP address and tls is "
                                           f"'{relay.tls}': set tls_name to the name its "
                                           "certificate carries")
        if relay.tls_name and not valid_domain(relay.tls_name):
            yield err((*path, "tls_name"), f"'{relay.tls_name}' is not a host name")
        if relay.tls == "wrapper" and relay.port == 25:
            yield err((*path, "port"), "tls: wrapper is TLS from the first byte, which port 25 "
                                       "never speaks; use port 465")
        if relay.auth and relay.tls == "encrypt":
            yield Finding(site.marks.at((*path, "tls")), (*path, "tls"),
                          "credentials go to a relay whose certificate is not checked; "
                          "prefer tls: verify", "warning")


_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\Z")


def check_routes(site: Site) -> Iterator[Finding]:
    """Routes, send_as and remote mailboxes."""

    def err(path: Path, message: str, severity: str = "error") -> Finding:
        return Finding(site.marks.at(path), path, message, severity)  # type: ignore[arg-type]

    local = {d.lower() for d in site.domains}
    for name in site.relays:
        if not _NAME.match(name):
            yield err(("relays", name), f"relay name '{name}' must be lowercase letters, digits "
                                        "and - (it names a Postfix transport)")
    names = [*site.relays, "direct"]
    send_as = {addr.lower() for a in site.accounts for addr in a.send_as}
    for i, account in enumerate(site.accounts):
        for j, addr in enumerate(account.send_as):
            path: Path = ("accounts", i, "send_as", j)
            if not valid_address(addr):
                yield err(path, f"'{addr}' is not a valid mail address")
            elif addr.lower().rpartition("@")[2] in local:
                yield err(path, f"'{addr}' is a local address: make it an alias of this account "
                                "instead (send_as is for outside addresses)")
    for section in ("recipients", "senders"):
        table: dict[str, str] = getattr(site.routes, section)
        seen: dict[str, str] = {}
        for key, relay in table.items():
            path = ("routes", section, key)
            if relay not in names:
                yield err(path, f"no relay named '{relay}' under relays:" +
                          (suggest(relay, names) or " (use a relay's name, or 'direct')"))
            domain_key = key.startswith("@")
            target = key[1:] if domain_key else key
            valid = valid_domain(target) if domain_key else valid_address(key)
            if not valid:
                yield err(path, f"'{key}' is neither an address nor @domain")
                continue
            domain = target.lower() if domain_key else key.lower().rpartition("@")[2]
            if section == "recipients" and domain in local:
                yield err(path, f"'{key}' is in the site's own domain {domain}: its mail is "
                                "delivered here, a recipient route cannot send it away")
            if section == "senders" and domain not in local:
                allowed = send_as if not domain_key else {
                    a for a in send_as if a.rpartition("@")[2] == domain}
                if (key.lower() not in send_as) if not domain_key else not allowed:
                    yield err(path, f"no account may send as '{key}': add it to an account's "
                                    "send_as, or Postfix refuses the sender before routing")
            norm = key.lower()
            if norm in seen:
                yield err(path, f"duplicate route for '{key}'")
            seen[norm] = relay
        for key, relay in table.items():
            if key.startswith("@"):
                continue
            parent = "@" + key.lower().rpartition("@")[2]
            if seen.get(parent) == relay:
                yield err(("routes", section, key), f"this route never changes anything: "
                                                    f"'{parent}' already sends it to '{relay}'",
                          "warning")
    accounts = {a.mail.lower() for a in site.accounts}
    seen_fetch: set[tuple[str, str, str]] = set()
    for i, fetch in enumerate(site.fetch):
        path = ("fetch", i)
        if fetch.account.lower() not in accounts:
            yield err((*path, "account"), f"no account '{fetch.account}'" +
                      suggest(fetch.account.lower(), accounts))
        if not (is_ip(fetch.host) or valid_domain(fetch.host)):
            yield err((*path, "host"), f"'{fetch.host}' is neither an IP address nor a host name")
        if fetch.port is not None and not 1 <= fetch.port <= 65535:
            yield err((*path, "port"), f"{fetch.port} is not a TCP port")
        if fetch.protocol == "pop3" and tuple(fetch.folders) != ("INBOX",):
            yield err((*path, "folders"), "POP3 has only the INBOX; folders need imap")
        if fetch.max_message_size is not None:
            yield from _size(site, fetch.max_message_size, (*path, "max_message_size"))
        fetch_key = (fetch.protocol, fetch.host.lower(), fetch.user.lower())
        if fetch_key in seen_fetch:
            yield err(path, f"{fetch.user} at {fetch.host} is collected twice")
        seen_fetch.add(fetch_key)


def _size(site: Site, size: int, path: Path) -> Iterator[Finding]:
    """A remote mailbox's own size limit: a message between it and Postfix's limit would be
    downloaded and refused on every run."""
    postfix = fetch_plan.postfix_limit(site)
    if size < 1:
        yield Finding(site.marks.at(path), path, f"{size} is not a size in bytes (at least 1)")
    elif postfix is None:
        where = ("postfix", "main", "message_size_limit")
        yield Finding(site.marks.at(where), where,
                      f"'{site.postfix.main['message_size_limit']}' is not a number of bytes")
    elif postfix and size > postfix:
        yield Finding(site.marks.at(path), path,
                      f"{size} is above Postfix's message_size_limit ({postfix}): a message "
                      "between the two would be downloaded and refused on every run")
