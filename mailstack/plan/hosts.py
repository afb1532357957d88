"""Assemble each host's plan from its roles."""

from __future__ import annotations

from collections.abc import Mapping

from mailstack.plan import (
    FileSpec,
    HostPlan,
    SitePlan,
    dit,
    dovecot,
    facts,
    fetch,
    postfix,
    slapd,
    tls,
)
from mailstack.site.model import Site

PACKAGES = {
    "ldap": ("slapd", "ldap-utils", "python3-ldap3"),
    "mta": ("postfix", "postfix-ldap", "libsasl2-modules"),
    "imap": ("dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "dovecot-ldap"),
}
SERVICES = {"ldap": ("slapd",), "mta": ("postfix",), "imap": ("dovecot",)}


def host_with(site: Site, role: str) -> str:
    return next(name for name, h in sorted(site.hosts.items()) if role in h.roles)


def ldap_uri(site: Site, host: str) -> str:
    """ldapi on the directory's own host; StartTLS to it from anywhere else."""
    ldap_host = host_with(site, "ldap")
    if ldap_host == host:
        return facts.LDAPI_URI
    return f"ldap://{site.hosts[ldap_host].hostname}"


def plan_host(site: Site, name: str, secrets: Mapping[str, str]) -> HostPlan:
    host = site.hosts[name]
    roles = tuple(r for r in ("ldap", "mta", "imap") if r in host.roles)
    files: list[FileSpec] = [*tls.files(name, roles, secrets)]
    if "ldap" in roles:
        files += slapd.files(site, name, secrets)
    if "mta" in roles:
        files += postfix.files(site, name, ldap_uri(site, name), secrets)
        files += fetch.files(site, secrets)
    if "imap" in roles:
        files += dovecot.files(site, name, ldap_uri(site, name), secrets)
    files.sort(key=lambda f: f.path)
    facts_out = {
        "ldap_uri": ldap_uri(site, name),
        "base": site.ldap.base,
        "admin_dn": str(dit.admin_dn(site)),
        "service_dns": {s: str(dit.service_dn(site, s)) for s in facts.SERVICE_ACCOUNTS},
        "accounts": [{"mail": a.mail, "dn": str(dit.account_dn(site, a.mail)),
                      "home": dit.mail_home(a.mail)} for a in site.accounts],
        "aliases": {k: list(v) for k, v in dit.alias_targets(site).items()},
        "vmail": {"user": facts.VMAIL_USER, "uid": facts.VMAIL_UID, "gid": facts.VMAIL_GID,
                  "dir": facts.VMAIL_DIR},
        # unprivileged system users the host needs before its files can be placed
        "system_users": [fetch.USER] if "mta" in roles and site.fetch else [],
    }
    fetching = "mta" in roles and bool(site.fetch)
    return HostPlan(
        name=name, hostname=host.hostname, roles=roles, files=tuple(files),
        packages=tuple(p for r in roles for p in PACKAGES[r]) + (("getmail6",) if fetching else ()),
        services=tuple(s for r in roles for s in SERVICES[r]) +
        (fetch.services(site) if fetching else ()),
        facts=facts_out,
    )


def plan_site(site: Site, secrets: Mapping[str, str]) -> SitePlan:
    return SitePlan(site.site, {name: plan_host(site, name, secrets) for name in sorted(site.hosts)})
