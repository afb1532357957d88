"""Relays and routes: one smtp transport per relay, the route tables, and the decision.

Postfix picks a route per recipient: ``transport_maps`` (by recipient) wins over everything,
then ``sender_dependent_default_transport_maps`` (by sender), then ``default_transport``.
:func:`tables` builds exactly the rows rendered into those maps, and :func:`decide` answers
"which relay takes this message" by looking them up in Postfix's own order, so
``mailstack routes`` and the rendered maps cannot disagree.

Each relay is its own transport in master.cf with its own TLS level, wrapper mode, CA and SASL
password map: credentials reach only their own relay.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailstack.site.model import Relay, Site

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
RELAY_DIR = "/etc/postfix/relay"


def transport_name(relay: str) -> str:
    return f"relay-{relay}"


def nexthop(relay: Relay) -> str:
    """``[host]:port``: brackets, so no MX lookup."""
    return f"[{relay.host}]:{relay.port}"


def transport(site: Site, relay: str) -> str:
    """The transport:nexthop a route to ``relay`` names (``smtp:`` for direct delivery)."""
    if relay == "direct":
        return "smtp:"
    return f"{transport_name(relay)}:{nexthop(site.relays[relay])}"


def ca_path(name: str) -> str:
    return f"{RELAY_DIR}/{name}-ca.crt"


def sasl_path(name: str) -> str:
    return f"{RELAY_DIR}/{name}.sasl"


def tls_level(relay: Relay) -> str:
    return "encrypt" if relay.tls == "encrypt" else "secure"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def transport_options(name: str, relay: Relay) -> tuple[tuple[str, str], ...]:
    """The ``-o`` overrides of one relay's smtp transport in master.cf."""
    opts = [
        ("syslog_name", f"postfix/{transport_name(name)}"),
        ("smtp_tls_security_level", tls_level(relay)),
        ("smtp_tls_CAfile", ca_path(name) if relay.ca_secret else SYSTEM_CA),
    ]
    if relay.tls_name and relay.tls != "encrypt":
        opts.append(("smtp_tls_secure_cert_match", relay.tls_name))
    # SNI: the relay's certificate name (a relay behind a shared address picks its certificate)
    servername = relay.tls_name or (None if _is_ip(relay.host) else "hostname")
    if servername:
        opts.append(("smtp_tls_servername", servername))
    if relay.tls == "wrapper":
        opts.append(("smtp_tls_wrappermode", "yes"))
    if relay.auth:
        opts += [
            ("smtp_sasl_auth_enable", "yes"),
            ("smtp_sasl_password_maps", f"texthash:{sasl_path(name)}"),
            ("smtp_sasl_security_options", "noanonymous"),
            ("smtp_sasl_tls_security_options", "noanonymous"),
        ]
    else:
        opts.append(("smtp_sasl_auth_enable", "no"))
    return tuple(opts)


def route_key(key: str) -> str:
    """A route's key as Postfix's table wants it: ``@domain`` stays for senders; recipients
    by domain are written as the bare domain (transport(5))."""
    return key.lower()


@dataclass(frozen=True)
class Tables:
    recipients: tuple[tuple[str, str], ...]   # transport_maps rows
    senders: tuple[tuple[str, str], ...]      # sender_dependent_default_transport_maps rows
    default: str                              # default_transport


def tables(site: Site) -> Tables:
    recipients = tuple(sorted((k.lower().removeprefix("@"), transport(site, r))
                              for k, r in site.routes.recipients.items()))
    senders = tuple(sorted((k.lower(), transport(site, r)) for k, r in site.routes.senders.items()))
    return Tables(recipients, senders, transport(site, site.relay.default))


@dataclass(frozen=True)
class Route:
    kind: str                 # local | relay | direct
    relay: str | None
    transport: str
    because: str
    credentials: str | None   # SASL login name offered, if any

    def describe(self) -> str:
        if self.kind == "local":
            return f"local delivery to Dovecot over LMTP ({self.because})"
        who = f"relay '{self.relay}'" if self.relay else "direct delivery (MX lookup)"
        creds = f"; credentials of {self.credentials}" if self.credentials else \
            "; no credentials"
        return f"{who} via {self.transport} ({self.because}){creds}"


def _keys(address: str, delimiter: str = "+") -> list[str]:
    local, _, domain = address.lower().rpartition("@")
    keys = [address.lower()]
    if delimiter in local:
        keys.append(f"{local.split(delimiter, 1)[0]}@{domain}")
    return keys


def decide(site: Site, sender: str, rcpt: str) -> Route:
    """Which way Postfix sends a message, by its own lookup order over the rendered tables."""
    domain = rcpt.lower().rpartition("@")[2]
    if domain in {d.lower() for d in site.domains}:
        return Route("local", None, "lmtp", f"{domain} is a local domain", None)
    t = tables(site)
    by_rcpt = dict(t.recipients)
    for key in [*_keys(rcpt), domain]:
        if key in by_rcpt:
            return _route(site, by_rcpt[key], f"recipient route {key}")
    by_sender = dict(t.senders)
    sdomain = "@" + sender.lower().rpartition("@")[2]
    for key in [*_keys(sender), sdomain]:
        if key in by_sender:
            return _route(site, by_sender[key], f"sender route {key}")
    return _route(site, t.default, "the default")


def _route(site: Site, target: str, because: str) -> Route:
    if target == "smtp:":
        return Route("direct", None, target, because, None)
    name = target.split(":", 1)[0].removeprefix("relay-")
    relay = site.relays[name]
    return Route("relay", name, target, because, relay.auth.user if relay.auth else None)
