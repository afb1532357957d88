"""The layout decided once: paths, ports, users and names every other module reads from here.

(Not to be confused with a host plan's ``facts``, the values the roles read from the manifest.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailstack.site.model import Account

# Where mailstack keeps what it loads rather than places, on every host.
STATE_DIR = "/var/lib/mailstack"
LDAP_STATE_DIR = f"{STATE_DIR}/ldap"
CONFIG_LDIF = f"{LDAP_STATE_DIR}/config.ldif"
DIT_LDIF = f"{LDAP_STATE_DIR}/dit.ldif"
SCHEMA_DIR = f"{LDAP_STATE_DIR}/schema"
ACL_EXPECTATIONS = f"{LDAP_STATE_DIR}/acl-expectations.json"
DEBIAN_SCHEMA_DIR = "/etc/ldap/schema"
SLAPD_D = "/etc/ldap/slapd.d"
SLAPD_DB_DIR = "/var/lib/ldap"
SLAPD_RUN_DIR = "/run/slapd"
LDAPI_SOCKET = "/run/slapd/ldapi"
LDAPI_URI = "ldapi://%2Frun%2Fslapd%2Fldapi"
ROOT_PEERCRED_DN = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"
"""Root over ldapi (SASL EXTERNAL): the mdb database's olcRootDN (ppolicy exempts it)."""

# TLS material placed on each host.
TLS_DIR = "/etc/mailstack/tls"
CA_CERT = f"{TLS_DIR}/ca.crt"

# The host's record of mailstack, JSON: {"site", "host", "since"[, "taken_over"]} once apply's
# survey accepted the host; {"prepared_by": ...} on a host whose packages a mailstack recipe
# installed (the lab image). A host without it is surveyed before anything changes.
HOST_MARKER = "/etc/mailstack/host.json"
# Where apply --take-over keeps a dated copy of a hand-made stack's configuration.
TAKEOVER_BACKUP_DIR = "/var/backups/mailstack"
# What the last successful apply placed on a host (its part of the manifest), so that the next
# one removes what the site no longer renders; removed files are kept in
# <REMOVED_BACKUP_DIR>/removed-<UTC>/<path> (secret files are deleted, never copied).
PLACED_RECORD = f"{STATE_DIR}/placed.json"
REMOVED_BACKUP_DIR = TAKEOVER_BACKUP_DIR
# Pruned accounts' mailboxes: <VMAIL_DIR>/.archive/<UTC date>/<domain>/<local> (never deleted).
MAIL_ARCHIVE = ".archive"

# Ports.
SMTP_PORT = 25
SUBMISSION_PORT = 587
SUBMISSIONS_PORT = 465
IMAP_PORT = 143
IMAPS_PORT = 993
POP3_PORT = 110
POP3S_PORT = 995
LDAP_PORT = 389
LDAPS_PORT = 636
MANAGESIEVE_PORT = 4190
HTTPS_PORT = 443
"""nginx: the client settings (plan/web.py)."""
MAIL_PORTS = (SMTP_PORT, SUBMISSIONS_PORT, SUBMISSION_PORT, POP3_PORT, POP3S_PORT, IMAP_PORT,
              IMAPS_PORT, LDAP_PORT, LDAPS_PORT, MANAGESIEVE_PORT)
"""Ports on which something already listening means a mail stack runs on the host."""

# Virtual mail storage: one uid/gid for every mailbox (Dovecot's first_valid_uid).
VMAIL_USER = "vmail"
VMAIL_UID = 5000
VMAIL_GID = 5000
VMAIL_DIR = "/var/vmail"

# What a mail stack set up by hand leaves: configurations (copied aside on --take-over; slapd's
# configuration and database are moved aside, so that mailstack builds its own) and mail.
FOREIGN_CONFIGS = ("/etc/postfix", "/etc/dovecot", "/etc/ldap/slapd.d", "/etc/ldap/slapd.conf",
                   "/etc/aliases", "/etc/mailname", "/etc/exim4", "/etc/default/slapd")
FOREIGN_MOVED = ("/etc/ldap/slapd.d", "/var/lib/ldap")
MAIL_SPOOLS = ("/var/mail", "/var/spool/mail", VMAIL_DIR, "/home/*/Maildir", "/root/Maildir")

# Postfix <-> Dovecot sockets, relative to Postfix's queue directory.
POSTFIX_QUEUE_DIR = "/var/spool/postfix"
LMTP_SOCKET = "private/dovecot-lmtp"
SASL_SOCKET = "private/auth"

# Directory layout below the suffix.
OU_PEOPLE = "people"
OU_ALIASES = "aliases"
OU_DOMAINS = "domains"
OU_APPLICATIONS = "applications"
OU_POLICIES = "policies"        # slapd's password policy entries (ppolicy)
OU_GROUPS = "groups"            # groups and distribution lists (groupOfNames)
DEFAULT_POLICY = "default"      # cn of the policy every password falls under
SERVICE_ACCOUNTS = ("dovecot", "postfix")

# Secret names (files below the secrets folder).
SECRET_LDAP_ADMIN = "ldap/admin"


def secret_service(name: str) -> str:
    return f"ldap/{name}"


def secret_account(mail: str) -> str:
    return f"accounts/{mail}"


def account_secret(account: Account) -> str:
    """The secret holding an account's initial password: its own, or accounts/<mail>."""
    return account.password_secret or secret_account(account.mail)


def secret_host_cert(host: str) -> str:
    return f"tls/{host}.crt"


def secret_host_key(host: str) -> str:
    return f"tls/{host}.key"


SECRET_CA_CERT = "tls/ca.crt"
SECRET_CA_KEY = "tls/ca.key"


def host_cert(host: str) -> str:
    return f"{TLS_DIR}/{host}.crt"


def host_key(host: str) -> str:
    """The key Postfix and Dovecot read (both read it as root)."""
    return f"{TLS_DIR}/{host}.key"


PUBLIC_TLS_DIR = f"{TLS_DIR}/public"
"""The certificate of the public ports in tls.mode acme (installed by certbot's deploy hook;
the site CA's host certificate until the first ACME one is there) and files (the admin's chain
and key from the secrets folder, rendered)."""
SECRET_PUBLIC_CA = "tls/public/ca.crt"
"""tls.mode files, optional: the root the admin's chains lead to when it is not one the system
trusts (a company's own PKI): verify trusts it for the public ports."""


def secret_public_cert(host: str) -> str:
    """tls.mode files: the chain host ``host``'s public ports serve (its certificate first)."""
    return f"tls/public/{host}.crt"


def secret_public_key(host: str) -> str:
    return f"tls/public/{host}.key"


def public_cert(host: str) -> str:
    """The certificate chain the public ports serve in tls.mode acme and files."""
    return f"{PUBLIC_TLS_DIR}/{host}.crt"


def public_key(host: str) -> str:
    """Its key (Postfix, Dovecot and nginx read it as root)."""
    return f"{PUBLIC_TLS_DIR}/{host}.key"


def slapd_key(host: str) -> str:
    """slapd's own copy of the key, readable by the openldap group only."""
    return f"/etc/ldap/tls/{host}.key"
