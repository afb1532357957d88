"""TLS material each host receives: the site CA, its certificate, and its key per daemon."""

from __future__ import annotations

from collections.abc import Mapping

from mailstack.plan import FileSpec, layout
from mailstack.site.model import Site


def files(host: str, roles: tuple[str, ...], secrets: Mapping[str, str], *,
          public: bool = False) -> list[FileSpec]:
    """The site CA and the host's certificate and key; with ``public`` (tls.mode files, on a
    host with public ports) also the admin's chain and key that those ports serve."""
    out = [
        FileSpec(layout.CA_CERT, "_formats/verbatim.j2", {"text": secrets[layout.SECRET_CA_CERT]}),
        FileSpec(layout.host_cert(host), "_formats/verbatim.j2",
                 {"text": secrets[layout.secret_host_cert(host)]}),
    ]
    if "mta" in roles or "imap" in roles:
        # Postfix and Dovecot read their key as root before dropping privileges
        out.append(FileSpec(layout.host_key(host), "_formats/verbatim.j2",
                            {"text": secrets[layout.secret_host_key(host)]}, 0o600))
        if public:
            out += [FileSpec(layout.public_cert(host), "_formats/verbatim.j2",
                             {"text": secrets[layout.secret_public_cert(host)]}),
                    FileSpec(layout.public_key(host), "_formats/verbatim.j2",
                             {"text": secrets[layout.secret_public_key(host)]}, 0o600)]
    return out


PUBLIC_MODES = ("acme", "files")
"""The modes whose public ports serve another certificate than the site CA's."""


def served_cert(site: Site, host: str) -> str:
    """The certificate host ``host``'s public ports serve: certbot's in tls.mode acme
    (plan/acme.py), the admin's in files, else the host certificate."""
    return layout.public_cert(host) if site.tls.mode in PUBLIC_MODES else layout.host_cert(host)


def served_key(site: Site, host: str) -> str:
    return layout.public_key(host) if site.tls.mode in PUBLIC_MODES else layout.host_key(host)
