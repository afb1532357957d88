"""What the relay and provider fixtures share: installing files in a container and restarting
only what changed, reading Maildirs, swapping and probing the certificate Postfix serves.

A fixture hands :func:`install` a :class:`Setup`: files (copied in with one ``put_tree`` as
``PATH.lab-new``, then moved over ``PATH`` only when the bytes differ), directories, the smtpd
listeners master.cf must have (and no others), log files to create. The script in the
container restarts Dovecot and then Postfix only when one of their files changed, or when the
daemon is not active, after ``doveconf -n`` / ``postfix check`` found nothing to say (and
``systemctl daemon-reload`` first when a unit drop-in changed).

Both fixtures' Dovecots run without the auth penalty (:func:`dovecot_drop_in`,
``fixtures/common/dovecot-no-penalty.conf``): with it every wrong password from the client
made the next login from there wait 2, 4, 8 ... s, and tests get passwords wrong on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailstack.container import Container
from mailstack.errors import ToolError
from mailstack.lab.plan import LabContainer
from mailstack.resources import lab_script as script

__all__ = [
    "DOVECOT_LOG",
    "MAIL_LOG",
    "POSTFIX_CERT",
    "POSTFIX_KEY",
    "SINK_DIR",
    "Put",
    "Setup",
    "clear_sink",
    "dovecot_drop_in",
    "fingerprint",
    "install",
    "maildir_messages",
    "read_file",
    "serve_certificate",
]

MAIL_LOG = "/var/log/mail.log"
DOVECOT_LOG = "/var/log/dovecot.log"
SINK_DIR = "/var/mail/relay/sink"
POSTFIX_CERT = "/etc/postfix/lab-relay.crt"
POSTFIX_KEY = "/etc/postfix/lab-relay.key"
MAIL_UID = 5000


@dataclass(frozen=True)
class Put:
    """One file for the container; ``tag`` names the daemon to restart when it changes
    (``postfix``, ``dovecot`` or ``""`` for none)."""

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root:root"
    tag: str = ""


@dataclass(frozen=True)
class Setup:
    files: Sequence[Put] = ()
    dirs: Sequence[tuple[str, str, int]] = ()
    """(path, owner, mode), made with parents when missing."""
    smtpd: dict[int, str] = field(default_factory=dict)
    """Port -> ``smtp`` (STARTTLS offered), ``smtp-encrypt`` (STARTTLS required) or
    ``smtps`` (TLS from the first byte): master.cf gets these smtpd listeners and no other."""
    logs: Sequence[str] = (MAIL_LOG, DOVECOT_LOG)
    daemons: Sequence[str] = ("dovecot", "postfix")
    """Started in this order (Dovecot first: it makes Postfix's SASL socket)."""


# Runs as `python3 -c _INSTALL SPEC` in the container, after the files were copied in as
# PATH.lab-new. Prints what it restarted, one per line.
_INSTALL = script("install_fixture.py")


DOVECOT_DROP_IN = "/etc/systemd/system/dovecot.service.d/mailstack-lab.conf"


FIXTURES = Path(str(resources.files("mailstack.lab"))) / "fixtures"


def render(kind: str, name: str, **data: object) -> str:
    """Fixture ``fixtures/KIND/NAME.j2`` rendered with the site's own Jinja environment
    (StrictUndefined: a value the template names and ``data`` lacks is an error)."""
    from mailstack import render as rendering

    return rendering.environment(FIXTURES).get_template(f"{kind}/{name}.j2").render(**data)


def dovecot_drop_in() -> Put:
    """The dovecot.service drop-in that turns Dovecot's auth penalty off in a lab fixture."""
    return Put(DOVECOT_DROP_IN, render("common", "dovecot-no-penalty.conf"), tag="dovecot")


def install(box: Container, setup: Setup) -> list[str]:
    """Put ``setup`` into the container; return the daemons that were (re)started."""
    with tempfile.TemporaryDirectory(prefix="mailstack-lab-") as tmp:
        for f in setup.files:
            local = Path(tmp, f.path.lstrip("/") + ".lab-new")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(f.content, encoding="utf-8")
            os.chmod(local, 0o600)
        box.put_tree(tmp, "/")
    spec = {
        "files": [{"path": f.path, "mode": f.mode, "owner": f.owner, "tag": f.tag}
                  for f in setup.files],
        "dirs": [list(d) for d in setup.dirs],
        "smtpd": {str(p): k for p, k in setup.smtpd.items()} if setup.smtpd else None,
        "logs": list(setup.logs),
        "daemons": list(setup.daemons),
    }
    proc = box.exec(["python3", "-c", _INSTALL, json.dumps(spec)], timeout=180)
    if proc.returncode != 0:
        raise ToolError(f"configuring the lab fixture in container {box.name} failed:\n"
                        f"  {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.split()


_READ_MAILDIR = script("read_maildir.py")


def maildir_messages(c: LabContainer, maildir: str) -> list[str]:
    """Raw messages in ``maildir`` (new/ and cur/) of container ``c``, oldest first."""
    proc = Container(c.name).exec(["python3", "-c", _READ_MAILDIR, maildir], check=True)
    try:
        return list(json.loads(proc.stdout))
    except ValueError:
        raise ToolError(f"reading {maildir} in {c.name}: unexpected output "
                        f"{proc.stdout[:200]!r}") from None


def clear_sink(c: LabContainer) -> None:
    """Empty the sink Maildir and the Postfix and Dovecot logs of a relay or the provider."""
    Container(c.name).exec(
        ["sh", "-c", f"rm -f {SINK_DIR}/new/* {SINK_DIR}/cur/* {SINK_DIR}/tmp/*; "
                     f": > {MAIL_LOG}; if [ -e {DOVECOT_LOG} ]; then : > {DOVECOT_LOG}; fi"],
        check=True,
    )


def read_file(c: LabContainer, path: str) -> str:
    """A text file of the container; "" when it is missing."""
    proc = Container(c.name).exec(["cat", path])
    return proc.stdout if proc.returncode == 0 else ""


def fingerprint(cert_pem: str) -> str:
    """SHA-256 of the DER form of the first certificate in ``cert_pem`` (hex)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# Runs as `python3 -c _PROBE PORT WRAPPER SHA256`: connects to Postfix on 127.0.0.1 until the
# certificate it presents has that fingerprint (a reload lets old smtpd processes finish).
_PROBE = script("probe_certificate.py")


def serve_certificate(c: LabContainer, cert: str, key: str) -> None:
    """Make the container's Postfix present ``cert``: swap its files, ``postfix reload``,
    and wait until every smtpd listener presents it."""
    box = Container(c.name)
    box.put_file(POSTFIX_KEY, key, 0o600)
    box.put_file(POSTFIX_CERT, cert, 0o644)
    box.exec(["postfix", "reload"], check=True)
    want = fingerprint(cert)
    for item in c.listens:
        kind, _, port = item.partition(":")
        if kind in ("smtp", "smtps"):
            box.exec(["python3", "-c", _PROBE, port, "1" if kind == "smtps" else "0", want],
                     check=True, timeout=30)
