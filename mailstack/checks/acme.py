"""ACME (tls.mode: acme): the site names its ACME CA, and only then."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from mailstack.checks.names import valid_address, valid_domain
from mailstack.findings import Finding
from mailstack.site.marks import Path
from mailstack.site.model import Site


def check(site: Site) -> Iterator[Finding]:
    def err(path: Path, message: str) -> Finding:
        return Finding(site.marks.at(path), path, message)

    acme = site.tls.acme
    if site.tls.mode != "acme":
        if acme is not None:
            yield err(("tls", "acme"), f"tls.acme is read only with tls.mode acme (mode is "
                                       f"{site.tls.mode}): remove it or set mode: acme")
        return
    if acme is None:
        yield err(("tls", "mode"), "tls.mode acme needs tls.acme with the server (the ACME "
                                   "directory URL of the CA, e.g. https://acme-v02.api."
                                   "letsencrypt.org/directory): mailstack never picks a CA")
        return
    host = urlsplit(acme.server).hostname or ""
    if not valid_domain(host):
        yield err(("tls", "acme", "server"), f"'{acme.server}': '{host}' is not a host name")
    if acme.email is not None and not valid_address(acme.email):
        yield err(("tls", "acme", "email"), f"'{acme.email}' is not a mail address")
    if not any({"mta", "imap"} & set(h.roles) for h in site.hosts.values()):
        yield err(("tls", "mode"), "tls.mode acme: no host has the mta or imap role, so no "
                                   "host serves a public certificate")
