"""The relay fixture: a hand-written Postfix that stands in for a site's relay server.

``fixtures/relay/main.cf`` (not produced by mailstack's renderer) accepts mail for any domain
from the lab subnet and keeps every message in one Maildir, ``/var/mail/relay/sink/``.
STARTTLS is offered with a self-signed certificate made in the container at the first
``lab up``; its certificate is copied to ``build/<site>/lab/relay-<name>.crt`` (a site that
wants ``tls: verify`` against the lab can use it as its ``ca_secret``).
"""

from __future__ import annotations

import ipaddress
import json
from importlib import resources

from mailstack.container import Container
from mailstack.errors import ToolError
from mailstack.lab.plan import LabContainer, LabPlan

__all__ = [
    "LOG_FILE",
    "SINK_DIR",
    "clear_messages",
    "configure",
    "messages",
    "read_log",
    "render_main_cf",
]

SINK_DIR = "/var/mail/relay/sink"
LOG_FILE = "/var/log/mail.log"
CERT = "/etc/postfix/lab-relay.crt"
KEY = "/etc/postfix/lab-relay.key"
SINK_UID = 5000


def fixture_text(name: str) -> str:
    return resources.files("mailstack.lab").joinpath("fixtures", "relay", name).read_text(
        encoding="utf-8"
    )


def render_main_cf(plan: LabPlan, relay: LabContainer) -> str:
    """The fixture main.cf with the lab's subnet and the relay's host name filled in."""
    return (
        fixture_text("main.cf")
        .replace("@LAB_SUBNET@", plan.subnet)
        .replace("@RELAY_HOSTNAME@", relay.hostname)
    )


# Runs in the relay container: $1 host name (certificate CN), $2 subjectAltName, $3 port,
# $4 1 for TLS from the first byte. Installs main.cf.lab-new, makes the certificate once, adds
# a listener for a port other than 25, and restarts Postfix only when something changed.
_CONFIGURE = r"""
set -eu
cd /etc/postfix
before=$(cat main.cf master.cf 2>/dev/null | md5sum)
# Replace main.cf only when it differs: Postfix tools wait ~2 s after main.cf changes.
if cmp -s main.cf.lab-new main.cf; then rm -f main.cf.lab-new; else mv -f main.cf.lab-new main.cf; fi
install -d -o 5000 -g 5000 -m 0750 /var/mail/relay
if [ ! -s lab-relay.key ] || [ ! -s lab-relay.crt ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 825 -keyout lab-relay.key \
        -out lab-relay.crt -subj "/CN=$1" -addext "subjectAltName=$2" 2>/dev/null
    chmod 0600 lab-relay.key
fi
if [ "$3" = 25 ]; then service=smtp; else service=$3; fi
if [ -z "$(postconf -M "$service/inet" 2>/dev/null)" ]; then
    postconf -M "$service/inet=$service inet n - y - - smtpd"
fi
if [ "$4" = 1 ]; then
    postconf -P "$service/inet/smtpd_tls_wrappermode=yes"
else
    postconf -PX "$service/inet/smtpd_tls_wrappermode" 2>/dev/null || true
fi
touch /var/log/mail.log
after=$(cat main.cf master.cf | md5sum)
if [ "$before" != "$after" ] || ! systemctl -q is-active postfix; then
    out=$(postfix check 2>&1) || { echo "$out" >&2; exit 1; }
    [ -z "$out" ] || { echo "postfix check: $out" >&2; exit 1; }
    systemctl restart postfix
    echo restarted
fi
"""


def _san(relay: LabContainer) -> str:
    parts = []
    for name in relay.tls_names:
        try:
            ipaddress.ip_address(name)
            parts.append(f"IP:{name}")
        except ValueError:
            parts.append(f"DNS:{name}")
    return ",".join(dict.fromkeys(parts))


def configure(plan: LabPlan, relay: LabContainer) -> str:
    """Install the fixture in the relay container; return its certificate (PEM)."""
    box = Container(relay.name)
    box.put_file("/etc/postfix/main.cf.lab-new", render_main_cf(plan, relay))
    wrapper = "1" if relay.tls == "wrapper" else "0"
    box.exec(
        ["sh", "-c", _CONFIGURE, "sh", relay.hostname, _san(relay), str(relay.port or 25),
         wrapper],
        check=True, timeout=120,
    )
    return box.exec(["cat", CERT], check=True).stdout


_READ_SINK = r"""
import json, os, sys
base = sys.argv[1]
found = []
for sub in ("new", "cur"):
    folder = os.path.join(base, sub)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        continue
    for name in names:
        path = os.path.join(folder, name)
        with open(path, "rb") as handle:
            data = handle.read().decode("utf-8", "surrogateescape")
        found.append((os.stat(path).st_mtime_ns, name, data))
found.sort()
json.dump([data for _, _, data in found], sys.stdout)
"""


def messages(relay: LabContainer) -> list[str]:
    """Raw messages in the relay's sink Maildir, oldest first."""
    proc = Container(relay.name).exec(["python3", "-c", _READ_SINK, SINK_DIR], check=True)
    try:
        return list(json.loads(proc.stdout))
    except ValueError:
        raise ToolError(f"reading the sink of {relay.name}: unexpected output "
                        f"{proc.stdout[:200]!r}") from None


def clear_messages(relay: LabContainer) -> None:
    """Empty the relay's sink Maildir and its mail log."""
    Container(relay.name).exec(
        ["sh", "-c", f"rm -f {SINK_DIR}/new/* {SINK_DIR}/cur/* {SINK_DIR}/tmp/*; "
                     f": > {LOG_FILE}"],
        check=True,
    )


def read_log(relay: LabContainer) -> str:
    """The relay's Postfix log (``maillog_file``)."""
    proc = Container(relay.name).exec(["cat", LOG_FILE])
    return proc.stdout if proc.returncode == 0 else ""
