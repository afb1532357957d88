"""What a mail client needs to know: the servers, ports and TLS an account uses (issue 13).

One list feeds every way a client learns its settings: `mailstack client-settings` (text and
the one-page sheet), Mozilla's autoconfig XML, Microsoft's Autodiscover answer and Apple's
mobileconfig (mailstack/clients.py formats them). They are made on demand for one address or
one domain, never rendered per account: 10,000 accounts must not mean 10,000 files.

The order is the one a client should prefer: implicit TLS first (993, 995, 465: RFC 8314
recommends it over STARTTLS), then STARTTLS (143, 110, 587). The user name is always the full
address; the password is the one for incoming mail ("same as incoming" for SMTP).
"""

from __future__ import annotations

from mailstack.clientconf import Kind, Server, Settings, Socket, payload_uuid
from mailstack.errors import InputError
from mailstack.plan import host_with, layout
from mailstack.site.model import Account, Site

__all__ = ["SERVICES", "Server", "Settings", "account", "domain_settings", "payload_uuid",
           "servers", "settings"]

# (kind, port, socket): the services every mail host of the site offers (plan/postfix.py's
# submission and submissions, plan/dovecot.py's listeners)
SERVICES: tuple[tuple[Kind, int, Socket], ...] = (
    ("imap", layout.IMAPS_PORT, "SSL"), ("imap", layout.IMAP_PORT, "STARTTLS"),
    ("pop3", layout.POP3S_PORT, "SSL"), ("pop3", layout.POP3_PORT, "STARTTLS"),
    ("smtp", layout.SUBMISSIONS_PORT, "SSL"), ("smtp", layout.SUBMISSION_PORT, "STARTTLS"),
)
# the account's protocol (site file) that each kind of server needs
PROTOCOL: dict[Kind, str] = {"imap": "imap", "pop3": "pop3", "smtp": "submission"}


def servers(site: Site, account: Account | None = None) -> tuple[Server, ...]:
    """The servers in the order a client should prefer; for an account only those its
    protocols allow (an account without POP3 is not offered POP3)."""
    imap, mta = (site.hosts[host_with(site, role)].hostname for role in ("imap", "mta"))
    hosts = {"imap": imap, "pop3": imap, "smtp": mta}
    allowed = set(account.protocols) if account else {"imap", "pop3", "submission"}
    return tuple(Server(kind, hosts[kind], port, socket) for kind, port, socket in SERVICES
                 if PROTOCOL[kind] in allowed)


def account(site: Site, address: str) -> Account:
    """The site's enabled account with this address (any case)."""
    found = next((a for a in site.accounts if a.mail.lower() == address.lower()), None)
    if found is None:
        raise InputError(f"{address}: no account of the site {site.site} has this address")
    if not found.enabled:
        raise InputError(f"{address}: the account is locked (enabled: false)")
    return found


def settings(site: Site, address: str | None = None) -> Settings:
    """An account's settings, or (no address) those of the site's first domain."""
    internal = site.tls.mode == "internal-ca"
    if address is None:
        return Settings(site.site, site.domains[0], None, None, servers(site), internal)
    a = account(site, address)
    domain = a.mail.rsplit("@", 1)[1].lower()
    return Settings(site.site, domain, a.mail, a.name, servers(site, a), internal)


def domain_settings(site: Site, domain: str) -> Settings:
    """The settings a client gets for any address of ``domain`` (autoconfig asks per domain)."""
    wanted = domain.lower().rstrip(".")
    if wanted not in {d.lower() for d in site.domains}:
        raise InputError(f"{domain}: not a mail domain of the site {site.site} "
                         f"(domains: {', '.join(site.domains)})")
    return Settings(site.site, wanted, None, None, servers(site), site.tls.mode == "internal-ca")

