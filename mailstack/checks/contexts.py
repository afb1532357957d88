"""Values that land in another file's syntax: refused where that syntax cannot carry them.

Each rendered format is escaped where it has an escape: LDIF (``ldap/ldif.py``: base64), DNs
(``ldap/dn.py``, RFC 4514), filters (``ldap/filter.py``, RFC 4515), getmail's Python literals
(``plan/fetch.py``). What a format cannot carry is refused here, at the value's line:

- Postfix's tables (texthash, cidr: own_senders, sender_login_extra, transport maps) read a line
  that starts with ``#`` as a comment and have no quoting, so a key that starts with ``#``
  would silently drop out of the table (tried with postmap -q on Postfix 3.7);
- Postfix's SASL password maps hold ``user:password`` and split at the first ``:``;
- Postfix and getmail strip the whitespace around a value (``key = value``; Dovecot's LDAP
  files quote what it would cut, ``plan/dovecot.py``);
- main.cf parameter names are letters, digits and ``_``; anything else would be a different
  line (``a = b`` as a name sets ``a``);
- the directory suffix is DN-escaped everywhere, but slapd's access rules quote it (a ``"`` in
  it made slapadd refuse the configuration) and Postfix strips a space at its end (bind_dn);
- an account's address is its login name, and Dovecot refuses a login with characters other than
  letters, digits, ``.``, ``-``, ``_`` (``auth_username_chars``); it also names the mailbox
  directory (``/var/vmail/<domain>/<local part>``): rarer characters go in aliases;
- secret names are file names below the secrets folder: no absolute paths, no ``..``;
- a relay names a Postfix service and its socket: at most 63 characters;
- a remote mailbox names a systemd unit ``mailstack-fetch@<id>``: two mailboxes may not share
  an id and a unit name is at most 255 characters.

Control characters anywhere are refused by ``names.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailstack import secrets
from mailstack.checks import names
from mailstack.checks.names import valid_address
from mailstack.findings import Finding
from mailstack.ldap.dn import DNError, dn
from mailstack.plan import fetch as fetch_plan
from mailstack.site.marks import Path
from mailstack.site.model import Site

DOVECOT_USERNAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@")
"""Dovecot 2.3's default auth_username_chars (dovecot.conf keeps it): a login with any other
character fails before a lookup (tried: doveadm auth test '#v+w=x@...' exit 77)."""
RELAY_NAME_MAX = 63
"""Postfix did not start with a 100-character relay name (its socket path is too long for a
Unix socket) while postfix check passed; 63 leaves room, like a DNS label."""
UNIT_NAME_MAX = 255
"""systemd refuses a longer unit name (UNIT_NAME_MAX - 1)."""
_PARAMETER = re.compile(r"[A-Za-z0-9_]+\Z")


def _padded(value: str) -> bool:
    return value != value.strip()


def check(site: Site) -> Iterator[Finding]:
    def err(path: Path, message: str) -> Finding:
        return Finding(site.marks.at(path), path, message)

    # Postfix: main.cf names, table keys, SASL maps
    for key, value in site.postfix.main.items():
        if not _PARAMETER.match(key):
            yield err(("postfix", "main", key), f"'{key}' is not a Postfix parameter name "
                                                "(letters, digits and _)")
        elif _padded(value):
            yield err(("postfix", "main", key), f"{value!r} starts or ends with a space, which "
                                                "Postfix strips")
    for i, account in enumerate(site.accounts):
        for j, address in enumerate(account.send_as):
            if address.startswith("#"):
                yield err(("accounts", i, "send_as", j), _COMMENT.format("own_senders"))
    for section in ("recipients", "senders"):
        for key in getattr(site.routes, section):
            if key.startswith("#"):
                yield err(("routes", section, key), _COMMENT.format(
                    "transport" if section == "recipients" else "sender_transport"))
    for name, relay in sorted(site.relays.items()):
        if len(name) > RELAY_NAME_MAX:
            yield err(("relays", name), f"a relay name is at most {RELAY_NAME_MAX} characters "
                                        f"(this one has {len(name)}): it names the Postfix "
                                        "service relay-<name>, whose socket private/relay-<name> "
                                        "must fit a Unix socket path")
        if relay.auth is None:
            continue
        path: Path = ("relays", name, "auth", "user")
        user = relay.auth.user
        if not user.strip():
            yield err(path, "the login name cannot be empty")
        elif ":" in user:
            yield err(path, f"'{user}' holds ':', which Postfix's SASL password map uses to "
                            "split user:password; the relay cannot be given this login")
        elif _padded(user):
            yield err(path, f"{user!r} starts or ends with a space, which Postfix strips")

    # the directory suffix: DN-escaped everywhere (Dovecot's files quoted), but slapd's access
    # rules quote it and Postfix strips a space at the end of bind_dn
    try:
        suffix = dn(site.ldap.base).rdns
    except DNError:
        suffix = ()  # names.py reports it
    for attr, value in (pair for rdn in suffix for pair in rdn):
        if '"' in value:
            yield err(("ldap", "base"), f"'{attr}={value}' holds '\"', which slapd's access "
                                        "rules cannot carry (they quote the suffix: slapadd "
                                        "refused the configuration)")
    if suffix and suffix[-1][-1][1] != suffix[-1][-1][1].rstrip():
        yield err(("ldap", "base"), "the suffix ends with a space, which Postfix strips from "
                                    "the end of bind_dn (its bind then fails)")

    # accounts: the address is a login name, and names a directory and a file
    for i, account in enumerate(site.accounts):
        local = account.mail.rpartition("@")[0]
        odd = sorted({c for c in local if c not in DOVECOT_USERNAME_CHARS})
        if valid_address(account.mail) and odd:
            yield err(("accounts", i, "mail"),
                      f"'{account.mail}' holds {' '.join(odd)}: an account's address is its "
                      "login name, and Dovecot refuses logins with anything but letters, "
                      "digits, '.', '-' and '_' (auth_username_chars); make it an alias of an "
                      "account instead")

    yield from _named_secrets(site)

    # remote mailboxes: getmail's rc file, systemd unit names
    units: dict[str, int] = {}
    for i, fetch in enumerate(site.fetch):
        path = ("fetch", i, "user")
        if not fetch.user.strip():
            yield err(path, "the login name cannot be empty")
        elif _padded(fetch.user):
            yield err(path, f"{fetch.user!r} starts or ends with a space, which getmail's "
                            "configuration parser strips")
        for j, folder in enumerate(fetch.folders):
            if not folder:
                yield err(("fetch", i, "folders", j), "a folder name cannot be empty")
        ident = fetch_plan.fetch_id(fetch)
        unit = f"{fetch_plan.UNIT}{ident}.service"
        if len(unit) > UNIT_NAME_MAX:
            yield err(("fetch", i), f"the remote mailbox's systemd unit {unit[:40]}... would be "
                                    f"{len(unit)} characters long; systemd allows at most "
                                    f"{UNIT_NAME_MAX}: shorten the user or host")
        if ident in units:
            first = site.marks.at(("fetch", units[ident]))
            yield err(("fetch", i), f"this remote mailbox and the one at line {first.line} "
                                    f"would share the systemd unit {fetch_plan.UNIT}{ident} and "
                                    "its files (user and host are reduced to a-z, 0-9, '.' "
                                    "and '-' for it)")
        else:
            units[ident] = i


_COMMENT = ("an address that starts with '#' cannot be a key of Postfix's {} table: Postfix "
            "reads that line as a comment and would silently leave it out")


def _named_secrets(site: Site) -> Iterator[Finding]:
    for ref in secrets.required(site):
        if ref.path[-1] in ("password_secret", "ca_secret") and not secrets.valid_name(ref.name):
            yield Finding(site.marks.at(ref.path), ref.path,
                          f"'{ref.name}' is not a valid secret name: {secrets.NAME_RULE}")


def secret_names(site: Site) -> Iterator[Finding]:
    """What ``mailstack secrets`` and ``lab secrets`` ask before they write a file: the names
    the site gives its secrets and its host keys (tls/<host>.crt) are paths below the folder.
    (``check`` finds the same through ``names.py`` and :func:`check`.)"""
    yield from _named_secrets(site)
    for name in site.hosts:
        if not names.HOST_KEY.match(name):
            yield Finding(site.marks.at(("hosts", name)), ("hosts", name),
                          names.host_key_message(name))
