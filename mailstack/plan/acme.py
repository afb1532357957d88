"""tls.mode acme: the public ports serve a certificate from an ACME CA, obtained by Debian's
certbot (HTTP-01, ``--webroot`` on port 80) and renewed by its timer.

Where things are:

- the public ports (Postfix's smtpd on 25/465/587, Dovecot's IMAP, POP3 and ManageSieve, nginx
  on 443) read :func:`~mailstack.plan.layout.public_cert` and ``public_key`` below
  /etc/mailstack/tls/public. Those two files are not rendered: on the first apply the base role
  copies the site CA's host certificate and key there (the daemons can start before any ACME
  certificate exists), and from then on only certbot's deploy hook writes them;
- certbot keeps its lineage under /etc/letsencrypt/live/<host name> (root-only keys); the
  deploy hook (:data:`HOOK`, run on the first certificate and on every renewal) installs the
  chain (0644) and the key (0600: Postfix, Dovecot and nginx read it as root) atomically and
  reloads the daemons that serve them. slapd keeps the site CA's certificate (LDAP is an
  internal hop), so it is never reloaded;
- port 80 belongs to nginx: on the host that serves client settings its site (plan/web.py)
  answers ``/.well-known/acme-challenge/`` from :data:`~mailstack.plan.web.ACME_ROOT`; on every
  other ACME host a site of its own (:data:`NGINX_SITE`) does only that;
- certbot talks to ``tls.acme.server`` only (``--server``: never a default CA). With
  ``tls.acme.ca_secret`` (a private ACME server), certbot trusts that CA alone
  (``REQUESTS_CA_BUNDLE``, set for the apply's request and, by a drop-in, for certbot.service
  the timer starts).

The apply requests a certificate only when certbot holds none for the host's names (the role
compares the names of the lineage's certificate with :func:`names`), so a second apply asks the
CA nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from mailstack.plan import FileSpec, layout, web
from mailstack.site.model import Site

PACKAGES = ("certbot", "nginx-light")
SERVICES = ("nginx", "certbot.timer")
HOOK = "/usr/local/lib/mailstack/acme-deploy"
"""certbot's deploy hook (``--deploy-hook``; certbot keeps it in the lineage's renewal
configuration as ``renew_hook``)."""
SERVER_CA = f"{layout.TLS_DIR}/acme-server-ca.crt"
"""The CA of the ACME server's own HTTPS certificate (``tls.acme.ca_secret``)."""
DROP_IN = "/etc/systemd/system/certbot.service.d/mailstack.conf"
NGINX_SITE = "/etc/nginx/conf.d/mailstack-acme.conf"
LIVE_DIR = "/etc/letsencrypt/live"
RENEWAL_DIR = "/etc/letsencrypt/renewal"


def active(site: Site) -> bool:
    return site.tls.mode == "acme"


def acme_host(site: Site, key: str) -> bool:
    """Host ``key`` serves public ports (mta or imap) of an acme site."""
    return active(site) and bool({"mta", "imap"} & set(site.hosts[key].roles))


def names(site: Site, key: str) -> tuple[str, ...]:
    """The names host ``key``'s ACME certificate carries (its host name first: certbot's
    lineage is named after it)."""
    return web.cert_names(site, key)


def cert_name(site: Site, key: str) -> str:
    return site.hosts[key].hostname.lower()


def reloads(site: Site, key: str) -> tuple[str, ...]:
    """The services the deploy hook reloads: every daemon that serves the certificate."""
    roles = site.hosts[key].roles
    return (("postfix",) if "mta" in roles else ()) + (
        ("dovecot",) if "imap" in roles else ()) + ("nginx",)


def environment(site: Site) -> dict[str, str]:
    """certbot's environment: the ACME server's CA as its only trust anchor, when the site
    names one."""
    acme = site.tls.acme
    return {"REQUESTS_CA_BUNDLE": SERVER_CA} if acme and acme.ca_secret else {}


def certonly(site: Site, key: str) -> list[str]:
    """The argv that obtains host ``key``'s certificate (and installs it by the hook)."""
    acme = site.tls.acme
    assert acme is not None
    contact = ["--email", acme.email] if acme.email else ["--register-unsafely-without-email"]
    argv = ["certbot", "certonly", "--non-interactive", "--agree-tos", "--server", acme.server,
            *contact, "--webroot", "--webroot-path", web.ACME_ROOT,
            "--cert-name", cert_name(site, key), "--keep-until-expiring",
            "--deploy-hook", HOOK]
    for name in names(site, key):
        argv += ["-d", name]
    return argv


def files(site: Site, key: str, secrets: Mapping[str, str]) -> list[FileSpec]:
    """What an ACME host receives: the deploy hook, the ACME server's CA and certbot.service's
    environment (with ca_secret), nginx's port-80 site (unless plan/web.py's serves it)."""
    if not acme_host(site, key):
        return []
    acme = site.tls.acme
    assert acme is not None
    out = [FileSpec(HOOK, "usr/local/lib/mailstack/acme-deploy.j2", {
        "site": site.site, "cert": layout.public_cert(key), "key": layout.public_key(key),
        "reloads": reloads(site, key)}, 0o755)]
    if acme.ca_secret:
        out.append(FileSpec(SERVER_CA, "_formats/verbatim.j2", {"text": secrets[acme.ca_secret]}))
        out.append(FileSpec(DROP_IN, "_formats/ini.j2", {
            "header": f"{site.site}: certbot trusts the ACME server's own CA (plan/acme.py)",
            "sections": [("Service", [("Environment", f"REQUESTS_CA_BUNDLE={SERVER_CA}")])]}))
    if web.serving_host(site) != key:
        out.append(FileSpec(NGINX_SITE, "etc/nginx/mailstack-acme.conf.j2",
                            {"site": site.site, "acme_root": web.ACME_ROOT}))
    return out


def pickup(path: str) -> str:
    return {NGINX_SITE: "nginx", DROP_IN: "systemd"}.get(path, "none")


def facts(site: Site, key: str) -> dict[str, object]:
    """What the base role needs: where the public certificate goes and what serves until
    certbot's is there, the names certbot's certificate must carry, the request."""
    if not acme_host(site, key):
        return {}
    lineage = f"{LIVE_DIR}/{cert_name(site, key)}"
    return {"acme": {
        "dir": layout.PUBLIC_TLS_DIR,
        "webroot": web.ACME_ROOT,
        "cert": layout.public_cert(key), "key": layout.public_key(key),
        "bootstrap": {"cert": layout.host_cert(key), "key": layout.host_key(key)},
        "names": list(names(site, key)),
        "lineage_cert": f"{lineage}/cert.pem",
        "certonly": certonly(site, key),
        "environment": environment(site),
        "hook": HOOK,
        "reloads": list(reloads(site, key)),
        "server": site.tls.acme.server if site.tls.acme else None,
        "remove": [] if web.serving_host(site) == key else [web.DEBIAN_DEFAULT_SITE],
    }}
