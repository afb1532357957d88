"""The relay fixture: a hand-written Postfix that stands in for a site's relay server.

``fixtures/relay/main.cf`` (not produced by mailstack's renderer) accepts mail for any domain
from the lab subnet and keeps every message in one Maildir, ``/var/mail/relay/sink/``.
STARTTLS (or TLS from the first byte for ``tls: wrapper``) is offered with a certificate of
the relay's own lab CA for all the relay's names, its ``tls_name`` among them (see
:mod:`mailstack.lab.tls`); a site's ``ca_secret`` for the relay holds that CA.

It also OFFERS AUTH (``fixtures/relay/dovecot.conf``: SASL through a Dovecot in the container
whose user list is empty, ``auth_verbose = yes``). Nobody can log in, mail from the lab network
is accepted without logging in, and any attempt is logged with its user name: in Postfix's log
(``SASL PLAIN authentication failed: ..., sasl_username=USER``) and Dovecot's
(``passwd-file(USER,IP): unknown user``). That is how the lab sees a site offering this relay
credentials meant for another one.
"""

from __future__ import annotations

from mailstack.container import Container
from mailstack.lab import fixture
from mailstack.lab.fixture import DOVECOT_LOG, MAIL_LOG, SINK_DIR, Put, Setup
from mailstack.lab.plan import LabContainer, LabPlan
from mailstack.lab.tls import KeyPair

__all__ = [
    "DOVECOT_LOG",
    "LOG_FILE",
    "SINK_DIR",
    "clear_messages",
    "configure",
    "messages",
    "read_log",
    "render_main_cf",
    "smtpd_listeners",
]

LOG_FILE = MAIL_LOG
SINK_UID = fixture.MAIL_UID


def render_main_cf(plan: LabPlan, relay: LabContainer) -> str:
    """The fixture main.cf with the lab's subnet and the relay's host name."""
    return fixture.render("relay", "main.cf", lab_subnet=plan.subnet,
                          relay_hostname=relay.hostname)


def smtpd_listeners(c: LabContainer, *, starttls: str = "smtp") -> dict[int, str]:
    """master.cf listeners from the container's ``smtp``/``smtps`` :attr:`~LabContainer.listens`
    (``starttls`` is what ``smtp`` becomes)."""
    out: dict[int, str] = {}
    for item in c.listens:
        kind, _, port = item.partition(":")
        if kind in ("smtp", "smtps"):
            out[int(port)] = starttls if kind == "smtp" else kind
    return out


def configure(plan: LabPlan, relay: LabContainer, cert: KeyPair) -> list[str]:
    """Install the fixture in the relay container, serving ``cert``; return the daemons that
    were (re)started (none when everything was already so)."""
    setup = Setup(
        files=[
            Put("/etc/postfix/main.cf", render_main_cf(plan, relay), tag="postfix"),
            Put(fixture.POSTFIX_KEY, cert.key, 0o600, tag="postfix"),
            Put(fixture.POSTFIX_CERT, cert.cert, tag="postfix"),
            Put("/etc/dovecot/dovecot.conf", fixture.render("relay", "dovecot.conf"),
                tag="dovecot"),
            Put("/etc/dovecot/lab-nobody", "", 0o640, "root:dovecot"),
            fixture.dovecot_drop_in(),
        ],
        dirs=[("/var/mail/relay", f"{SINK_UID}:{SINK_UID}", 0o750)],
        smtpd=smtpd_listeners(relay),
    )
    return fixture.install(Container(relay.name), setup)


def messages(relay: LabContainer) -> list[str]:
    """Raw messages in the relay's sink Maildir, oldest first."""
    return fixture.maildir_messages(relay, SINK_DIR)


def clear_messages(relay: LabContainer) -> None:
    """Empty the relay's sink Maildir and its logs."""
    fixture.clear_sink(relay)


def read_log(relay: LabContainer) -> str:
    """The relay's Postfix log (``maillog_file``)."""
    return fixture.read_file(relay, LOG_FILE)
