"""The mail host's small web service: client settings over HTTPS (``clients.serve``).

Mail clients look for their settings by the address's domain: Thunderbird at
``https://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=…`` (and
``/.well-known/autoconfig/…``), Outlook by POSTing to
``https://autodiscover.<domain>/autodiscover/autodiscover.xml``, and an iPhone installs the
profile at ``/mobileconfig?emailaddress=…``. The IMAP host answers all three:

- nginx (Debian's ``nginx-light``) terminates TLS on 443 with the host's certificate (which then
  also names ``autoconfig.<domain>`` and ``autodiscover.<domain>``: :func:`cert_names`), TLS
  1.2 and 1.3 only, bodies of at most 16 KiB; port 80 answers ACME's HTTP-01 challenges from a
  web root and sends everything else to https;
- behind it, on loopback, ``mailstack-clientconf.service`` runs mailstack/clientconf.py (the very
  module `mailstack client-settings` formats with: one code path) as an unprivileged system
  user with no capabilities, a read-only system and no home. It reads one JSON file of the
  site's domains and servers (no accounts: 10,000 accounts are not 10,000 files, and the
  service tells nobody which addresses exist).

Debian's default site (``sites-enabled/default``, a welcome page on port 80) is removed: the
site's server blocks are the default ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from mailstack import clientconf
from mailstack.plan import FileSpec, clients, host_with, layout, tls
from mailstack.site.model import Site

PACKAGES = ("nginx-light",)
SERVICE = "mailstack-clientconf"
USER = "mailstack-web"
"""The unprivileged system user the service runs as (systemd's DynamicUser fails with
226/NAMESPACE in the lab's containers, so a static one, which works everywhere)."""
SERVICES = ("nginx", SERVICE)
PORT = 8461
"""Where the service listens on loopback (nginx proxies to it)."""
NGINX_SITE = "/etc/nginx/conf.d/mailstack-clients.conf"
DEBIAN_DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
HANDLER = "/usr/local/lib/mailstack/clientconf.py"
DATA = "/etc/mailstack/clientconf.json"
UNIT = f"/etc/systemd/system/{SERVICE}.service"
ACME_ROOT = "/var/lib/mailstack/acme"
"""The web root of ACME's HTTP-01 challenges (``/.well-known/acme-challenge/``)."""
PREFIXES = ("autoconfig", "autodiscover")
MAX_BODY = "16k"


def serving_host(site: Site) -> str | None:
    """The host that answers mail clients (the IMAP host), or None when the site serves none."""
    return host_with(site, "imap") if site.clients.serve else None


def client_names(site: Site) -> tuple[str, ...]:
    """``autoconfig.<domain>`` and ``autodiscover.<domain>`` of every mail domain."""
    return tuple(f"{prefix}.{d.lower()}" for d in site.domains for prefix in PREFIXES)


def cert_names(site: Site, key: str) -> tuple[str, ...]:
    """The names host ``key``'s certificate carries: its host name, and the client names on
    the serving host."""
    names: tuple[str, ...] = (site.hosts[key].hostname.lower(),)
    if serving_host(site) == key:
        names += client_names(site)
    return names


def _unit(site: Site) -> FileSpec:
    command = f"/usr/bin/python3 -I {HANDLER} --listen 127.0.0.1 --port {PORT} {DATA}"
    return FileSpec(UNIT, "_formats/ini.j2", {
        "header": f"{site.site}: client settings for mail clients, behind nginx (plan/web.py)",
        "sections": [
            ("Unit", [("Description", "mailstack client settings (autoconfig, Autodiscover, "
                                      "mobileconfig)"),
                      ("After", "network.target")]),
            ("Service", [("ExecStart", command), ("User", USER), ("Group", USER),
                         ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                         ("PrivateTmp", "yes"), ("PrivateDevices", "yes"),
                         ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""),
                         ("RestrictAddressFamilies", "AF_INET AF_INET6"),
                         ("MemoryMax", "128M"), ("Restart", "on-failure")]),
            ("Install", [("WantedBy", "multi-user.target")]),
        ]})


def files(site: Site, key: str, secrets: Mapping[str, str]) -> list[FileSpec]:
    """What the serving host receives (nothing elsewhere)."""
    if serving_host(site) != key:
        return []
    internal = site.tls.mode == "internal-ca"
    data = clientconf.service_data(site.site, [d.lower() for d in site.domains],
                                   list(clients.servers(site)),
                                   secrets[layout.SECRET_CA_CERT] if internal else None)
    nginx = {"site": site.site, "names": (site.hosts[key].hostname.lower(),
                                          *client_names(site)),
             "cert": tls.served_cert(site, key), "key": tls.served_key(site, key),
             "acme_root": ACME_ROOT, "port": PORT, "max_body": MAX_BODY,
             "autoconfig_paths": clientconf.AUTOCONFIG_PATHS,
             # Outlook spells the path in either case: a case-insensitive regex location
             "autodiscover_regex": "^" + re.escape(clientconf.AUTODISCOVER_PATH) + "$",
             "mobileconfig_path": clientconf.MOBILECONFIG_PATH}
    source = Path(clientconf.__file__).read_text(encoding="utf-8")
    return [
        FileSpec(NGINX_SITE, "etc/nginx/mailstack-clients.conf.j2", nginx),
        FileSpec(HANDLER, "_formats/verbatim.j2", {"text": source}),
        FileSpec(DATA, "_formats/verbatim.j2", {"text": data}),
        _unit(site),
    ]


def pickup(path: str) -> str:
    """nginx checks and reloads its site; the service restarts for its code, data or unit."""
    return "nginx" if path == NGINX_SITE else "systemd"


def facts(site: Site, key: str) -> dict[str, object]:
    """What the base role and verify need: the files Debian's nginx brings that must go."""
    if serving_host(site) != key:
        return {}
    return {"web": {"remove": [DEBIAN_DEFAULT_SITE], "port": PORT, "user": USER,
                    "handler": HANDLER, "data": DATA,
                    "names": list(client_names(site))}}
