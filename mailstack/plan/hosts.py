"""Assemble each host's plan from its roles."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from mailstack.plan import (
    FileSpec,
    HostPlan,
    SitePlan,
    acme,
    audit,
    dit,
    dovecot,
    fail2ban,
    fetch,
    folders,
    layout,
    postfix,
    recovery,
    sieve,
    slapd,
    tls,
    topology,
    watchdog,
    web,
)
from mailstack.plan import host_with as host_with
from mailstack.site.model import Site
from mailstack.site.sizes import account_quota

BASE_PACKAGES = ("python3-apt",)
"""Every host: Ansible's apt module installs the others with it (a bare Debian lacks it)."""
PACKAGES = {
    "ldap": ("slapd", "ldap-utils", "python3-ldap3"),
    "ldap-replica": ("slapd", "ldap-utils", "python3-ldap3"),
    # ca-certificates: main.cf's smtp_tls_CAfile, and every relay or remote mailbox without a
    # CA of its own, trust the system store (a minimal Debian has none)
    "mta": ("postfix", "postfix-ldap", "libsasl2-modules", "ca-certificates"),
    "imap": ("dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "dovecot-ldap", "dovecot-sieve",
             "dovecot-managesieved"),
    "relay": (),
}
SERVICES = {"ldap": ("slapd",), "ldap-replica": ("slapd",), "mta": ("postfix",),
            "imap": ("dovecot",), "relay": ()}
DAEMON_SERVICES = frozenset(s for services in SERVICES.values() for s in services)
"""The services the daemon roles manage themselves."""


def debconf(site: Site, name: str) -> dict[str, list[str]]:
    """debconf answers, per package, given before the package is first installed.

    slapd: no configuration of its own (mailstack_slapd builds cn=config offline). Postfix:
    "Local only" under the host's name: Debian's postinst writes a main.cf that listens on
    loopback only, builds aliases.db and starts Postfix. So nothing answers on port 25 before
    the checked configuration is swapped in, and the staged check (smtpd -S) finds the proxymap
    and tlsmgr of a running Postfix. ("No configuration" leaves no main.cf, no aliases.db and
    no running Postfix: the staged check then fails on the first apply.)
    """
    out: dict[str, list[str]] = {}
    roles = host_roles(site, name)
    if "ldap" in roles or "ldap-replica" in roles:
        out["slapd"] = ["slapd slapd/no_configuration boolean true"]
    if "mta" in roles:
        out["postfix"] = ["postfix postfix/main_mailer_type select Local only",
                          f"postfix postfix/mailname string {site.hosts[name].hostname}"]
    return out


def host_roles(site: Site, name: str) -> tuple[str, ...]:
    return topology.roles(site, name)


def packages(site: Site, name: str) -> tuple[str, ...]:
    """The Debian packages host ``name`` needs, in install order (the manifest's list)."""
    roles = host_roles(site, name)
    fetching = "mta" in roles and bool(site.fetch)
    return BASE_PACKAGES + tuple(dict.fromkeys(p for r in roles for p in PACKAGES[r])) + (
        ("getmail6",) if fetching else ()) + fail2ban.PACKAGES + tuple(dict.fromkeys(
            (web.PACKAGES if web.serving_host(site) == name else ())
            + (acme.PACKAGES if acme.acme_host(site, name) else ())))


def placed(files: list[FileSpec], role: str, pickup: Callable[[str], str]) -> list[FileSpec]:
    """``files`` as placed by ``role``, each with how its daemon picks it up (by its path)."""
    return [replace(f, role=role, pickup=pickup(f.path)) for f in files]


def services(site: Site, name: str) -> tuple[str, ...]:
    """The services host ``name`` runs: its daemons, getmail6's timers on the mta, fail2ban,
    and the client settings' web service on the host that serves them."""
    roles = host_roles(site, name)
    fetching = "mta" in roles and bool(site.fetch)
    return tuple(s for r in roles for s in SERVICES[r]) + (
        fetch.services(site) if fetching else ()) + watchdog.services(roles) + (
        fail2ban.SERVICE,) + tuple(dict.fromkeys(
            (web.SERVICES if web.serving_host(site) == name else ())
            + (acme.SERVICES if acme.acme_host(site, name) else ())))


def ldap_uri(site: Site, host: str) -> str:
    """ldapi on the provider's own host; StartTLS to it from anywhere else, and on a host with
    a replica to the replica first (by the host's own name: StartTLS checks the certificate's
    name, which ldapi has none of), then the provider: a provider that is down or hung then
    costs the host nothing."""
    ldap_host = topology.provider(site)
    if ldap_host == host:
        return layout.LDAPI_URI
    provider = f"ldap://{site.hosts[ldap_host].hostname}"
    if "ldap-replica" in site.hosts[host].roles:
        return f"ldap://{site.hosts[host].hostname} {provider}"
    return provider


def plan_host(site: Site, name: str, secrets: Mapping[str, str]) -> HostPlan:
    host = site.hosts[name]
    roles = host_roles(site, name)
    files = placed(tls.files(name, roles, secrets, public=site.tls.mode == "files"), "base",
                   lambda _: "tls")
    if "ldap" in roles or "ldap-replica" in roles:
        files += placed(slapd.files(site, name, secrets), "slapd", slapd.pickup)
    if "mta" in roles:
        files += placed(postfix.files(site, name, ldap_uri(site, name), secrets), "postfix",
                        lambda path: "aliases" if path == postfix.ALIASES else "reload")
        files += placed(fetch.files(site, secrets), "base", fetch.pickup)
    if "imap" in roles:
        files += placed(dovecot.files(site, name, ldap_uri(site, name), secrets), "dovecot",
                        lambda _: "reload")
        files += placed(dovecot.script_files(), "base", lambda _: "none")
    files += placed(recovery.files(roles), "base", lambda _: "systemd")
    files += placed(watchdog.files(roles), "base", watchdog.pickup)
    files += placed(fail2ban.files(site, name), "base", fail2ban.pickup)
    files += placed(audit.files(), "base", audit.pickup)
    files += placed(web.files(site, name, secrets), "base", web.pickup)
    files += placed(acme.files(site, name, secrets), "base", acme.pickup)
    files.sort(key=lambda f: f.path)
    facts_out = {
        "ldap_uri": ldap_uri(site, name),
        "base": site.ldap.base,
        "admin_dn": str(dit.admin_dn(site)),
        "service_dns": {s: str(dit.service_dn(site, s)) for s in layout.SERVICE_ACCOUNTS},
        # with several mail hosts: the accounts whose home this host is (on the provider, its
        # passwords are set for all: the slapd role reads facts.slapd.first_passwords)
        "accounts": [{"mail": a.mail, "dn": str(dit.account_dn(site, a.mail)),
                      "home": dit.mail_home(a.mail), "enabled": a.enabled,
                      # bytes, or None: no limit (verify's host checks ask doveadm quota)
                      "quota": account_quota(site.quota.default, a.quota)}
                     for a in site.accounts if topology.home(site, a) == name
                     or not topology.several_homes(site)],
        # delivery-only accounts (a shared folder's address): in the userdb, never a login
        "delivery_accounts": sorted(a.mail for a in dit.delivery_accounts(site)),
        # ldap.accounts: site (the site file says which accounts exist) or directory
        "accounts_mode": site.ldap.accounts,
        "aliases": {k: list(v) for k, v in dit.alias_targets(site).items()},
        "vmail": {"user": layout.VMAIL_USER, "uid": layout.VMAIL_UID, "gid": layout.VMAIL_GID,
                  "dir": layout.VMAIL_DIR},
        # unprivileged system users the host needs before its files can be placed
        "system_users": ([fetch.USER] if "mta" in roles and site.fetch else []) + (
            [web.USER] if web.serving_host(site) == name else []),
        "debconf": debconf(site, name),
        # the host's services no daemon role manages (getmail6's timers, fail2ban): base
        # starts them
        "other_services": [s for s in services(site, name) if s not in DAEMON_SERVICES],
        # the jails fail2ban must run, and the units whose journal each one reads (verify)
        "fail2ban": {"jails": fail2ban.jail_names(site, name),
                     "units": {j.name: j.unit for j in fail2ban.jails(site, name) if j.unit}},
        # the argv that empties Dovecot's auth cache (the dovecot role runs it after a change of
        # the directory's entries)
        # and the public namespace's folders it creates (Maildir++ directories owned by vmail)
        **({"dovecot": {"flush_all": dovecot.flush_command(),
                        "public_dirs": folders.public_dirs(site),
                        # the folder tree (UTF-8, as doveadm takes it): a folder that leaves
                        # it and still holds mail is reported by apply, never deleted
                        "tree": [f.name for f in site.folders],
                        "tree_file": folders.TREE_FILE,
                        # compiled after each swap (the role's compile-sieve.sh)
                        "sieve_dir": sieve.SIEVE_DIR}} if "imap" in roles else {}),
        **({"slapd": {"config_ldif": layout.CONFIG_LDIF, "dit_ldif": layout.DIT_LDIF,
                      "config_dir": layout.SLAPD_D, "db_dir": layout.SLAPD_DB_DIR,
                      "run_dir": layout.SLAPD_RUN_DIR, "ldapi_uri": layout.LDAPI_URI,
                      "placeholder": dit.PLACEHOLDER_PASSWORD,
                      "reconcile": dit.reconcile_facts(site),
                      # a replica's tree is the provider's (syncrepl): the role builds its
                      # configuration only and never writes entries or passwords there
                      "replica": "ldap-replica" in roles,
                      # the accounts whose first password apply sets (on the provider: all
                      # of them, wherever their home is)
                      "first_passwords": [str(dit.account_dn(site, a.mail))
                                          for a in site.accounts]}}
            if "ldap" in roles or "ldap-replica" in roles else {}),
        # what verify's host checks expect of slapd (no role reads these)
        **({"directory": {"network": slapd.serves_network(site),
                          "root_password": site.ldap.root_password,
                          "root_dn": layout.ROOT_PEERCRED_DN,
                          "policy_dn": str(dit.policy_dn(site)),
                          "min_length": site.ldap.password_policy.min_length}}
            if "ldap" in roles else {}),
        # the client settings' web service (plan/web.py): Debian's files the role removes
        **web.facts(site, name),
        # tls.mode acme (plan/acme.py): the public certificate, what serves until certbot's is
        # there, and the request
        **acme.facts(site, name),
        # what the last apply placed (removed next time when the site no longer renders it),
        # and where removed files and pruned accounts' mailboxes are kept
        "placed": {"record": layout.PLACED_RECORD, "backup_dir": layout.REMOVED_BACKUP_DIR,
                   "mail_archive": f"{layout.VMAIL_DIR}/{layout.MAIL_ARCHIVE}"},
        # what apply looks at on a host it has not applied before (mailstack_survey)
        "survey": {
            "marker": layout.HOST_MARKER,
            "ports": list(layout.MAIL_PORTS),
            "configs": list(layout.FOREIGN_CONFIGS),
            "moved": list(layout.FOREIGN_MOVED),
            "spools": list(layout.MAIL_SPOOLS),
            "queue": layout.POSTFIX_QUEUE_DIR,
            "backup_dir": layout.TAKEOVER_BACKUP_DIR,
        },
    }
    return HostPlan(
        name=name, hostname=host.hostname, roles=roles, files=tuple(files),
        packages=packages(site, name), services=services(site, name), facts=facts_out,
    )


def plan_site(site: Site, secrets: Mapping[str, str]) -> SitePlan:
    return SitePlan(site.site, {name: plan_host(site, name, secrets) for name in sorted(site.hosts)})
