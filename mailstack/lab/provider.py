"""The provider fixture: a public mail provider (smtp.provider.example, pop.provider.example,
imap.provider.example ...) in one container, with hand-written configs (not produced by
mailstack's renderer) in ``fixtures/provider/``.

* Dovecot (``dovecot.conf``): IMAP on 993 and POP3 on 995, TLS only (or the ports the site's
  ``fetch`` entries name); one mailbox per login in ``/etc/dovecot/lab-users`` (a passwd-file:
  every relay ``auth.user`` and ``fetch`` user, passwords from the site's secrets), a Maildir
  each at ``/var/mail/provider/<login>/``; and SASL for Postfix.
* Postfix (``main.cf``): 465 (TLS from the first byte) and 587 (STARTTLS required), plus any
  other port a relay of the site names; AUTH only over TLS; mail is taken only from a logged-in
  user and only FROM an address that login owns (``smtpd_sender_login_maps``: every mailbox
  owns its own address), else ``553 5.7.1 <ADDR>: Sender address rejected: not owned by user
  LOGIN``. Whatever is accepted, for any domain, lands in one sink Maildir
  (``/var/mail/relay/sink/``); the log (``/var/log/mail.log``) shows ``sasl_username=LOGIN``.

Both serve one certificate of the provider's own lab CA for all its names.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping

from mailstack.container import Container
from mailstack.errors import InputError, ToolError
from mailstack.lab import fixture
from mailstack.lab.fixture import DOVECOT_LOG, MAIL_LOG, SINK_DIR, Put, Setup
from mailstack.lab.plan import LabContainer
from mailstack.lab.relay import smtpd_listeners
from mailstack.lab.tls import KeyPair
from mailstack.resources import lab_script as script

__all__ = [
    "MAILBOX_ROOT",
    "USERS_FILE",
    "check_login",
    "clear_mailbox",
    "configure",
    "mailbox",
    "mailbox_dir",
    "messages",
    "put_message",
    "read_log",
    "render_dovecot_conf",
    "render_main_cf",
    "sender_logins",
    "set_password",
    "users_file",
]

MAILBOX_ROOT = "/var/mail/provider"
USERS_FILE = "/etc/dovecot/lab-users"
SENDER_LOGINS = "/etc/postfix/lab-sender-logins"
DOVECOT_CERT = "/etc/dovecot/lab-provider.crt"
DOVECOT_KEY = "/etc/dovecot/lab-provider.key"
UID = fixture.MAIL_UID


def check_login(user: str) -> str:
    """``user`` if it can be a login of the provider (a passwd-file line, a folder name)."""
    if not user or user.startswith(".") or any(ch in user for ch in ":/\n\r\x00 \t"):
        raise InputError(f"{user!r} cannot be a login at the lab's provider (no ':', '/', "
                         "white space, not starting with '.')")
    return user


def mailbox_dir(user: str) -> str:
    return f"{MAILBOX_ROOT}/{check_login(user)}"


def render_main_cf(provider: LabContainer) -> str:
    return fixture.render("provider", "main.cf", provider_hostname=provider.hostname)


def render_dovecot_conf(provider: LabContainer) -> str:
    """The fixture dovecot.conf with one TLS listener per imaps/pop3s port of the provider."""
    return fixture.render("provider", "dovecot.conf", imaps_ports=provider.ports("imaps"),
                          pop3s_ports=provider.ports("pop3s"))


def users_file(passwords: Mapping[str, str]) -> str:
    """Dovecot passwd-file lines (password base64-encoded, so any character is fine)."""
    lines = []
    for user, password in passwords.items():
        encoded = base64.b64encode(password.encode()).decode()
        lines.append(f"{check_login(user)}:{{PLAIN.b64}}{encoded}::::::")
    return "".join(line + "\n" for line in lines)


def sender_logins(provider: LabContainer) -> str:
    """smtpd_sender_login_maps: every mailbox named by an address owns that address."""
    rows = [f"{u.lower()} {u}" for u in provider.mailboxes if "@" in u]
    return "# address  login(s) that may send as it\n" + "".join(r + "\n" for r in rows)


def configure(provider: LabContainer, cert: KeyPair, passwords: Mapping[str, str]) -> list[str]:
    """Install the fixture with ``passwords`` (login -> password) for every mailbox; return
    the daemons that were (re)started."""
    missing = [u for u in provider.mailboxes if u not in passwords]
    if missing:
        raise ToolError(f"no password for the provider's mailboxes {', '.join(missing)}")
    dirs = [(MAILBOX_ROOT, f"{UID}:{UID}", 0o750), ("/var/mail/relay", f"{UID}:{UID}", 0o750)]
    for user in provider.mailboxes:
        base = mailbox_dir(user)
        dirs += [(base, f"{UID}:{UID}", 0o700)]
        dirs += [(f"{base}/{sub}", f"{UID}:{UID}", 0o700) for sub in ("new", "cur", "tmp")]
    setup = Setup(
        files=[
            Put("/etc/postfix/main.cf", render_main_cf(provider), tag="postfix"),
            Put(SENDER_LOGINS, sender_logins(provider), tag="postfix"),
            Put(fixture.POSTFIX_KEY, cert.key, 0o600, tag="postfix"),
            Put(fixture.POSTFIX_CERT, cert.cert, tag="postfix"),
            Put("/etc/dovecot/dovecot.conf", render_dovecot_conf(provider), tag="dovecot"),
            Put(DOVECOT_KEY, cert.key, 0o600, tag="dovecot"),
            Put(DOVECOT_CERT, cert.cert, tag="dovecot"),
            fixture.dovecot_drop_in(),
            # Dovecot reads a passwd-file again when it changes: no restart.
            Put(USERS_FILE, users_file({u: passwords[u] for u in provider.mailboxes}),
                0o640, "root:dovecot"),
        ],
        dirs=dirs,
        smtpd=smtpd_listeners(provider, starttls="smtp-encrypt"),
    )
    return fixture.install(Container(provider.name), setup)


def _known(provider: LabContainer, user: str) -> str:
    if user not in provider.mailboxes:
        have = ", ".join(provider.mailboxes) or "none"
        raise InputError(f"the lab's provider has no mailbox {user!r} (mailboxes: {have})")
    return user


def mailbox(provider: LabContainer, user: str) -> list[str]:
    """Raw messages in ``user``'s mailbox (new/ and cur/), oldest first."""
    return fixture.maildir_messages(provider, mailbox_dir(_known(provider, user)))


# Runs as `python3 -c _PUT DIR NAME SEEN UID` with the message on stdin: written to tmp/, then
# moved to new/NAME or cur/NAME:2,S (the Maildir way: no reader sees half a message).
_PUT = script("put_message.py")


def put_message(provider: LabContainer, user: str, raw: str, *, seen: bool = False) -> str:
    """Drop ``raw`` into ``user``'s mailbox as the provider's own delivery would (``new/``), or
    with ``seen`` as if already read at the provider (``cur/NAME:2,S``); return its path."""
    base = mailbox_dir(_known(provider, user))
    text = raw.replace("\r\n", "\n")
    if not text.endswith("\n"):
        text += "\n"
    name = f"{time.time_ns() // 1000}.M{uuid.uuid4().hex[:12]}.lab-provider"
    proc = Container(provider.name).exec(
        ["python3", "-c", _PUT, base, name, "1" if seen else "0", str(UID)],
        input=text.encode("utf-8", "surrogateescape"), check=True)
    return proc.stdout.strip()


def clear_mailbox(provider: LabContainer, user: str) -> None:
    """Delete every message in ``user``'s mailbox (Dovecot notices at the next login)."""
    base = mailbox_dir(_known(provider, user))
    Container(provider.name).exec(
        ["sh", "-c", 'rm -f "$1"/new/* "$1"/cur/* "$1"/tmp/*', "sh", base], check=True)


# Runs as `python3 -c _SET_PASSWORD FILE USER PASSWORD_B64`: rewrites that user's line.
# Dovecot looks at a passwd-file at most once a second (per whole second of its clock) and
# reads it again only when its mtime or size changed: the new file gets a later mtime than the
# old one, and the script returns only after the current second is over.
_SET_PASSWORD = script("set_password.py")


def set_password(provider: LabContainer, user: str, password: str) -> None:
    """Give ``user``'s mailbox another password (until the next ``lab up`` puts the one from
    the site's secrets back). Dovecot reads the changed passwd-file at the next login."""
    _known(provider, user)
    encoded = base64.b64encode(password.encode()).decode()
    Container(provider.name).exec(["python3", "-c", _SET_PASSWORD, USERS_FILE, user, encoded],
                                  check=True)


def read_log(provider: LabContainer, daemon: str = "postfix") -> str:
    """The provider's Postfix log (``postfix``) or Dovecot log (``dovecot``: IMAP/POP3 logins,
    failed passwords)."""
    paths = {"postfix": MAIL_LOG, "dovecot": DOVECOT_LOG}
    if daemon not in paths:
        raise InputError(f"daemon must be postfix or dovecot, not {daemon!r}")
    return fixture.read_file(provider, paths[daemon])


def messages(provider: LabContainer) -> list[str]:
    """Raw messages the provider accepted for sending (its sink Maildir), oldest first."""
    return fixture.maildir_messages(provider, SINK_DIR)
