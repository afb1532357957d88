"""Dovecot: IMAP/POP3/LMTP with LDAP passdb (auth binds) and userdb, as one self-contained file.

Decisions: ``dovecot.conf`` includes nothing from ``conf.d`` (the package's defaults cannot
change what was rendered); passwords are checked by binding as the user (``auth_bind``), so
``cn=dovecot`` never reads ``userPassword``; the mailbox location is set once
(``mail_location``) and LMTP delivers through the same userdb, so IMAP, POP3 and delivery
cannot disagree about where mail lives; TLS is required before any password is sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from mailstack.ldap import filter as lf
from mailstack.plan import FileSpec, dit, layout
from mailstack.site.model import Site

PASSDB_FILE = "/etc/dovecot/dovecot-ldap-passdb.conf.ext"
USERDB_FILE = "/etc/dovecot/dovecot-ldap-userdb.conf.ext"
MAIL_LOCATION = "maildir:~/Maildir"


def conf_value(value: str) -> str:
    """A value for Dovecot's ``key = value`` files, quoted where it must be: Dovecot reads ``#``
    anywhere as a comment, unquotes ``"..."`` and strips spaces around a value (tried with
    dnpass in doveadm auth test); inside quotes ``\\`` and ``\"`` are its escapes."""
    if "#" in value or '"' in value or "\\" in value or value != value.strip():
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def ldap_settings(site: Site, which: str, ldap_uri: str, password: str) -> dict[str, str]:
    """One Dovecot LDAP args file (passdb or userdb), from the lookups as data."""
    lookup = {lk.name: lk for lk in dit.lookups(site)}[which]
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
    if which == "passdb":
        settings.update({
            "auth_bind": "yes",
            "pass_filter": lf.render(lookup.filter),
            "pass_attrs": "mail=user",
        })
    else:
        home = f"{prof.home_attr}=home" if prof.home_attr else \
            f"=home={layout.VMAIL_DIR}/%Ld/%Ln"
        settings.update({
            "user_filter": lf.render(lookup.filter),
            "user_attrs": home,
            "iterate_filter": lf.render(dit.iterate_filter(site)),
            "iterate_attrs": "mail=user",
        })
    return {key: conf_value(value) for key, value in settings.items()}


def config(site: Site, host: str) -> dict[str, object]:
    """Data for dovecot.conf: plain settings, then named sections."""
    return {
        "settings": [
            ("protocols", "imap pop3 lmtp"),
            ("listen", "*"),
            ("log_path", "syslog"),
            ("auth_mechanisms", "plain login"),
            ("disable_plaintext_auth", "yes"),
            ("auth_username_format", "%Lu"),
            # brute force: every failed login waits this long before its answer (Dovecot's
            # anvil adds a growing penalty per address); fail2ban bans (plan/fail2ban.py)
            ("auth_failure_delay", "2 secs"),
            ("ssl", "required"),
            ("ssl_cert", f"<{layout.host_cert(host)}"),
            ("ssl_key", f"<{layout.host_key(host)}"),
            ("ssl_min_protocol", "TLSv1.2"),
            ("ssl_prefer_server_ciphers", "yes"),
            ("mail_location", MAIL_LOCATION),
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
        ],
        "passdb": PASSDB_FILE,
        "userdb": USERDB_FILE,
        "lmtp_socket": f"{layout.POSTFIX_QUEUE_DIR}/{layout.LMTP_SOCKET}",
        "auth_socket": f"{layout.POSTFIX_QUEUE_DIR}/{layout.SASL_SOCKET}",
        "imap_port": layout.IMAP_PORT, "imaps_port": layout.IMAPS_PORT,
        "pop3_port": layout.POP3_PORT, "pop3s_port": layout.POP3S_PORT,
        "mailboxes": [("Drafts", "\\Drafts"), ("Junk", "\\Junk"), ("Sent", "\\Sent"),
                      ("Trash", "\\Trash")],
    }


def files(site: Site, host: str, ldap_uri: str, secrets: Mapping[str, str]) -> list[FileSpec]:
    pw = secrets[layout.secret_service("dovecot")]
    return [
        FileSpec("/etc/dovecot/dovecot.conf", "etc/dovecot/dovecot.conf.j2", config(site, host)),
        FileSpec(PASSDB_FILE, "_formats/keyvalue.j2",
                 {"settings": list(ldap_settings(site, "passdb", ldap_uri, pw).items()),
                  "header": "Dovecot LDAP passdb: find the user's DN, then bind as the user"},
                 0o600),
        FileSpec(USERDB_FILE, "_formats/keyvalue.j2",
                 {"settings": list(ldap_settings(site, "userdb", ldap_uri, pw).items()),
                  "header": "Dovecot LDAP userdb: the mailbox home (one value for IMAP, POP3, LMTP)"},
                 0o600),
    ]
