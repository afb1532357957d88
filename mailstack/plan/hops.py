"""The site's own mail path between its mail hosts (a head office and its branches).

With several mail hosts every account has a home (``mailhost``; plan/topology.py). A mail host
delivers only the accounts homed there; Postfix's ``transport_maps`` asks the directory
(lookup ``remote_mailboxes``: the account's ``mailstackMailHost`` when it is not this host)
and sends the others on:

- from a mail host that is not the relay: to the relay host (``mailstack-site:[relay]:25``);
  everything else that is not local goes there too (the relay applies the site's routes);
- from the relay host: straight to the home (``mailstack-site:[<mailstackMailHost>]:25``).

Each hop is TLS verified against the site CA, and the client shows its host certificate
(issued by the site CA with clientAuth). The receiving side knows its peers by their public
key's SHA-256 fingerprint (``relay_clientcerts``, ``permit_tls_clientcerts``): they may relay
through the relay host and send as the site's own senders on port 25, which port 25 refuses
to everybody else. Nothing is trusted by address.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from mailstack import certs
from mailstack.plan import layout, topology
from mailstack.site.model import Site

TRANSPORT = "mailstack-site"
"""master.cf's smtp transport for the hops between the site's mail hosts."""
PEERS = "/etc/postfix/site_peers"
"""relay_clientcerts: the public-key fingerprints of the site's other mail hosts."""
PORT = 25


def active(site: Site) -> bool:
    """Whether the site has hops of its own (several mail hosts)."""
    return topology.several_homes(site)


def nexthop(hostname: str) -> str:
    return f"{TRANSPORT}:[{hostname}]:{PORT}"


def remote_format(site: Site, host: str) -> str:
    """ldap_table(5) result_format of ``remote_mailboxes`` on ``host``: the relay sends to the
    home the directory names (%s); another mail host sends to the relay."""
    relay = topology.relay_host(site)
    if relay is None or relay == host:
        return nexthop("%s")
    return nexthop(site.hosts[relay].hostname.lower())


def default_transport(site: Site, host: str) -> str | None:
    """Where ``host`` sends what is not local when it is not the relay: the relay host."""
    relay = topology.relay_host(site)
    if not active(site) or relay is None or relay == host:
        return None
    return nexthop(site.hosts[relay].hostname.lower())


def fingerprint(cert_pem: str) -> str:
    """Postfix's public-key fingerprint (smtpd_tls_fingerprint_digest = sha256): the SHA-256
    of the DER SubjectPublicKeyInfo, upper-case hex pairs joined by colons. It survives a
    renewal that keeps the key (mailstack secrets --renew)."""
    digest = hashlib.sha256(certs.inspect(cert_pem).public_key).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def peers(site: Site, host: str, secrets: Mapping[str, str]) -> list[tuple[str, str]]:
    """relay_clientcerts rows (key fingerprint, host name) of the hosts that hand ``host``
    mail on the site's own path: on the relay every other mail host, elsewhere the relay."""
    relay = topology.relay_host(site)
    names = [n for n in topology.mail_hosts(site) if n != host] if relay == host else \
        [relay] if relay is not None else []
    return [(fingerprint(secrets[layout.secret_host_cert(name)]),
             site.hosts[name].hostname.lower()) for name in names]


def transport_options(host: str) -> tuple[tuple[str, str], ...]:
    """The ``-o`` overrides of the site's own smtp transport: verified TLS against the site CA
    (the certificate must name the next hop), the host's certificate shown as a client."""
    return (
        ("syslog_name", f"postfix/{TRANSPORT}"),
        ("smtp_tls_security_level", "verify"),
        ("smtp_tls_CAfile", layout.CA_CERT),
        ("smtp_tls_cert_file", layout.host_cert(host)),
        ("smtp_tls_key_file", layout.host_key(host)),
        ("smtp_tls_servername", "hostname"),
    )


def main_cf(site: Site, host: str) -> dict[str, str]:
    """What the site's own hops add to main.cf on a mail host (nothing with one mail host)."""
    if not active(site):
        return {}
    return {
        # ask every client for a certificate (none is required: outside MTAs send none) and
        # know the site's mail hosts by their keys
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_tls_CAfile": layout.CA_CERT,
        "smtpd_tls_fingerprint_digest": "sha256",
        "relay_clientcerts": f"texthash:{PEERS}",
    }
