"""Relays: the default names a relay, each relay is well-formed and is not this site itself."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from mailstack.checks.names import valid_domain
from mailstack.findings import Finding, suggest
from mailstack.site.marks import Path
from mailstack.site.model import Site


def _is_ip(host: str) -> bool:
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
        if not (_is_ip(relay.host) or valid_domain(relay.host)):
            yield err((*path, "host"), f"'{relay.host}' is neither an IP address nor a host name")
        if relay.host.lower() in own:
            yield err((*path, "host"), f"'{relay.host}' is this site itself: mail sent there "
                                       "would loop")
        if not 1 <= relay.port <= 65535:
            yield err((*path, "port"), f"{relay.port} is not a TCP port")
        if relay.tls in ("verify", "wrapper") and _is_ip(relay.host) and not relay.tls_name:
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
