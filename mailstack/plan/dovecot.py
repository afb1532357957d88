"""Dovecot: IMAP/POP3/LMTP with LDAP passdb (auth binds) and userdb, as one self-contained file.

Decisions: ``dovecot.conf`` includes nothing from ``conf.d`` (the package's defaults cannot
change what was rendered); passwords are checked by binding as the user (``auth_bind``), so
``cn=dovecot`` never reads ``userPassword``; the mailbox location is set once
(``mail_location``) and LMTP delivers through the same userdb, so IMAP, POP3 and delivery
cannot disagree about where mail lives; TLS is required before any password is sent.

Per-account services and locked accounts: a first passdb with ``deny = yes`` (``passdb_deny``
of plan/dit.py, its own args file) finds the account when it is locked or the service (``%Ls``:
imap, pop3, smtp for Postfix's SASL) is one it may not use; the client sees the same generic
failure as for a wrong password, the login process logs ``(user disabled)``. LMTP delivery
asks only the userdb, so it is never affected.

The auth cache is on (:data:`AUTH_CACHE`); whoever changes an account in the directory runs
:func:`flush_command` on every Dovecot host (apply's dovecot role after a change of the
directory's data; ``mailstack user`` after each command).

Quotas: the quota plugin (``count``) on every mailbox; the limit comes from the userdb only
when the entry has ``mailstackQuota`` (no attribute: no ``quota_rule``: no limit), a warning
at ``quota.warning`` percent (script ``quota-warning``, mailstack/data/quota_warning.py), and a
full mailbox defers (``quota_full_tempfail``) or refuses as ``quota.when_full`` says.
"""

from __future__ import annotations

from collections.abc import Mapping

from mailstack import resources
from mailstack.ldap import filter as lf
from mailstack.plan import FileSpec, audit, dit, folders, layout, sieve, tls, watchdog
from mailstack.site.model import Site

PASSDB_FILE = "/etc/dovecot/dovecot-ldap-passdb.conf.ext"
DENY_FILE = "/etc/dovecot/dovecot-ldap-deny.conf.ext"
USERDB_FILE = "/etc/dovecot/dovecot-ldap-userdb.conf.ext"
MAIL_LOCATION = "maildir:~/Maildir"
QUOTA_WARNING = "/usr/local/lib/mailstack/quota-warning"
QUOTA_WARNING_SERVICE = "quota-warning"
QUOTA_ROOT = "count:User quota"
MAIL_PLUGINS = ("quota", "acl", *audit.PLUGINS)
IMAP_PLUGINS = ("imap_quota", "imap_acl")

# The passdbs' names: Dovecot's log prefix with auth_verbose (``deny_service(user,ip): ...``).
# Not a driver name on purpose: fail2ban's dovecot filter counts ``ldap(user,ip): unknown
# user``, and with a deny passdb every good login logs that line from it (tried: every user
# would be banned after 10 logins). A name with ``_`` is outside the filter's ``[a-z-]{3,15}``;
# failures are counted once, from the login process's ``auth failed`` line, as before.
DENY_PASSDB_NAME = "deny_service"
PASSDB_NAME = "ldap_bind"

AUTH_CACHE = (
    ("auth_cache_size", "10M"),
    # a password change, lock or service change is followed by a flush (flush_command)
    ("auth_cache_ttl", "1 hour"),
    # a failed lookup is remembered briefly only: a new account or a typo'd login soon retries
    ("auth_cache_negative_ttl", "30 secs"),
)


def flush_command(user: str | None = None) -> list[str]:
    """The argv that empties Dovecot's auth cache on a host, for one user or all (as root).

    Run it on every Dovecot host after a password change, a lock or unlock, or a change of
    an account's services, so that the old state stops working at once (with the cache on, a
    cached password keeps working until another one is used). ``doveadm`` exits 0 and prints
    ``N cache entries flushed``. The user travels as an argument: an address, never a secret.
    """
    return ["doveadm", "auth", "cache", "flush", *([user] if user else [])]


def flush_hosts(site: Site) -> tuple[str, ...]:
    """The site's hosts (keys) that run Dovecot: each one runs :func:`flush_command`."""
    return tuple(sorted(name for name, host in site.hosts.items() if "imap" in host.roles))


def conf_value(value: str) -> str:
    """A value for Dovecot's ``key = value`` files, quoted where it must be: Dovecot reads ``#``
    anywhere as a comment, unquotes ``"..."`` and strips spaces around a value (tried with
    dnpass in doveadm auth test); inside quotes ``\\`` and ``\"`` are its escapes."""
    if "#" in value or '"' in value or "\\" in value or value != value.strip():
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def ldap_settings(site: Site, which: str, ldap_uri: str, password: str,
                  host: str | None = None) -> dict[str, str]:
    """One Dovecot LDAP args file (passdb or userdb), from the lookups as data, as ``host``
    makes them."""
    lookup = {lk.name: lk for lk in dit.lookups(site, host)}[which]
    prof = dit.profile(site)
    settings = {
        "uris": ldap_uri,
        "dn": str(dit.service_dn(site, "dovecot")),
        "dnpass": password,
        "ldap_version": "3",
        "base": str(lookup.base).replace("%", "%%"),
        "scope": "subtree",
        "deref": "never",
    }
    if not ldap_uri.startswith("ldapi:"):
        settings.update({"tls": "yes", "tls_ca_cert_file": layout.CA_CERT,
                         "tls_require_cert": "hard"})
    if which == "passdb_deny":
        # no auth_bind: found is enough (deny = yes), whatever the password
        settings.update({
            "pass_filter": lf.render(lookup.filter),
            "pass_attrs": "mail=user",
        })
    elif which == "passdb":
        settings.update({
            "auth_bind": "yes",
            "pass_filter": lf.render(lookup.filter),
            "pass_attrs": "mail=user",
        })
    else:
        home = f"{prof.home_attr}=home" if prof.home_attr else \
            f"=home={layout.VMAIL_DIR}/%Ld/%Ln"
        # ATTR=key=template is set only when the entry has ATTR (%$ is its value): no
        # mailstackQuota, no quota_rule, no limit. (=quota_rule=*:bytes=%{ldap:...} gives
        # "*:bytes=" when absent: "Invalid bytes limit", the mailbox cannot be opened.)
        quota = f"{dit.QUOTA}=quota_rule=*:bytes=%$"
        # the groups for the ACL file's group= entries: ONE value "a,b" (folders.acl_groups_value;
        # Dovecot 2.3 keeps only the first value of a multi-valued attribute)
        acl_groups = f"{dit.ACL_GROUP}=acl_groups"
        settings.update({
            "user_filter": lf.render(lookup.filter),
            "user_attrs": f"{home},{quota},{acl_groups}",
            "iterate_filter": lf.render(dit.iterate_filter(site, host)),
            "iterate_attrs": "mail=user",
        })
    return {key: conf_value(value) for key, value in settings.items()}


def config(site: Site, host: str) -> dict[str, object]:
    """Data for dovecot.conf: plain settings, then named sections."""
    return {
        "settings": [
            ("protocols", "imap pop3 lmtp" + (" sieve" if site.sieve.managesieve else "")),
            ("listen", "*"),
            ("log_path", "syslog"),
            ("auth_mechanisms", "plain login"),
            ("disable_plaintext_auth", "yes"),
            ("auth_username_format", "%Lu"),
            # brute force: every failed login waits this long before its answer (Dovecot's
            # anvil adds a growing penalty per address); fail2ban bans (plan/fail2ban.py)
            ("auth_failure_delay", "2 secs"),
            # the reason of a refused login in the log ("User found from deny passdb",
            # "Password mismatch"); see DENY_PASSDB_NAME for why fail2ban counts no more
            ("auth_verbose", "yes"),
            *AUTH_CACHE,
            ("ssl", "required"),
            ("ssl_cert", f"<{tls.served_cert(site, host)}"),
            ("ssl_key", f"<{tls.served_key(site, host)}"),
            ("ssl_min_protocol", "TLSv1.2"),
            ("ssl_prefer_server_ciphers", "yes"),
            ("mail_location", MAIL_LOCATION),
            # every plugin of every mail process, in one place (quota; acl: shared folders)
            ("mail_plugins", "$mail_plugins " + " ".join(MAIL_PLUGINS)),
            # an LDA/LMTP setting, not the plugin's: inside plugin {} it is silently ignored
            # (tried: 552 5.2.2 and a bounce)
            ("quota_full_tempfail", "yes" if site.quota.when_full == "defer" else "no"),
            ("mail_uid", str(layout.VMAIL_UID)),
            ("mail_gid", str(layout.VMAIL_GID)),
            ("first_valid_uid", str(layout.VMAIL_UID)),
            ("last_valid_uid", str(layout.VMAIL_UID)),
            ("first_valid_gid", str(layout.VMAIL_GID)),
            ("last_valid_gid", str(layout.VMAIL_GID)),
            ("mail_privileged_group", "mail"),
            ("lmtp_save_to_detail_mailbox", "no"),
            ("recipient_delimiter", "+"),
            ("postmaster_address", f"postmaster@{site.domains[0]}"),
            ("hostname", site.hosts[host].hostname),
            *watchdog.dovecot_settings(site.hosts[host].roles),
            *sieve.global_settings(site, host),
        ],
        "passdbs": [
            {"name": DENY_PASSDB_NAME, "args": DENY_FILE, "deny": True},
            {"name": PASSDB_NAME, "args": PASSDB_FILE, "deny": False},
        ],
        "quota": {
            "settings": [
                ("quota", QUOTA_ROOT),
                ("quota_vsizes", "yes"),
                ("quota_warning", f"storage={site.quota.warning}%% {QUOTA_WARNING_SERVICE} "
                                  f"{site.quota.warning} %u postmaster@{site.domains[0]}"),
            ],
            "service": QUOTA_WARNING_SERVICE,
            "script": QUOTA_WARNING,
            "user": layout.VMAIL_USER,
        },
        # the audit trail (plan/audit.py): deletions, expunges, copies, folder deletes/renames
        "mail_log": audit.plugin_settings(),
        "userdb": USERDB_FILE,
        "lmtp_socket": f"{layout.POSTFIX_QUEUE_DIR}/{layout.LMTP_SOCKET}",
        "auth_socket": f"{layout.POSTFIX_QUEUE_DIR}/{layout.SASL_SOCKET}",
        "imap_port": layout.IMAP_PORT, "imaps_port": layout.IMAPS_PORT,
        "pop3_port": layout.POP3_PORT, "pop3s_port": layout.POP3S_PORT,
        "imap_plugins": " ".join(IMAP_PLUGINS),
        # the folder tree and the shared folders (plan/folders.py)
        "mailboxes": folders.mailboxes(site),
        "public": {"prefix": folders.PUBLIC_PREFIX, "location": folders.PUBLIC_LOCATION}
        if folders.public_folders(site) else None,
        "acl": f"vfile:{folders.ACL_FILE}",
        # Pigeonhole (plan/sieve.py): the sieve plugin for LMTP, ManageSieve on its port
        "sieve": {"settings": sieve.plugin_settings(site),
                  "managesieve_port": layout.MANAGESIEVE_PORT if site.sieve.managesieve else None},
    }


def files(site: Site, host: str, ldap_uri: str, secrets: Mapping[str, str]) -> list[FileSpec]:
    pw = secrets[layout.secret_service("dovecot")]
    return [
        FileSpec(DENY_FILE, "_formats/keyvalue.j2",
                 {"settings": list(ldap_settings(site, "passdb_deny", ldap_uri, pw, host).items()),
                  "header": "Dovecot LDAP deny passdb: a locked account, or a service it may "
                            "not use (%Ls)"},
                 0o600),
        FileSpec("/etc/dovecot/dovecot.conf", "etc/dovecot/dovecot.conf.j2", config(site, host)),
        FileSpec(PASSDB_FILE, "_formats/keyvalue.j2",
                 {"settings": list(ldap_settings(site, "passdb", ldap_uri, pw, host).items()),
                  "header": "Dovecot LDAP passdb: find the user's DN, then bind as the user"},
                 0o600),
        FileSpec(folders.ACL_FILE, "_formats/verbatim.j2",
                 {"text": "".join(f"{line}\n" for line in [
                     "# Dovecot's global ACL file (acl = vfile:), rendered by mailstack from the "
                     "site's shared_folders", *folders.acl_lines(site)])}),
        FileSpec(USERDB_FILE, "_formats/keyvalue.j2",
                 {"settings": list(ldap_settings(site, "userdb", ldap_uri, pw, host).items()),
                  "header": "Dovecot LDAP userdb: the mailbox home (one value for IMAP, POP3, LMTP)"},
                 0o600),
        *sieve.files(site),
    ]


def quota_warning_text() -> str:
    """The host-side script ``quota-warning`` (a real, linted file of the package)."""
    return (resources.PACKAGE / "data" / "quota_warning.py").read_text(encoding="utf-8")


def script_files() -> list[FileSpec]:
    """Files outside /etc/dovecot (placed by the base role): the quota-warning script."""
    return [FileSpec(QUOTA_WARNING, "_formats/verbatim.j2", {"text": quota_warning_text()},
                     0o755)]
