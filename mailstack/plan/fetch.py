"""Remote mailboxes: collected by getmail6, one systemd timer instance per mailbox.

fetchmail was the brief's first choice, but it cannot do what collection needs over IMAP: it
decides what is new by the \\Seen flag (a message read at the provider is never collected) and
``uidl`` works with POP3 only. getmail6 remembers what it retrieved, by UIDL (POP3) and by UID
(IMAP), in an oldmail file under its state directory, so a message is collected exactly once,
whether or not it was read at the provider, across restarts. It verifies the server's
certificate only when ``ca_certs`` is set, so it is always set (the system's CAs by default).

Each mailbox runs as ``mailstack-fetch@<id>.service`` (oneshot, unprivileged user, its own
state directory) started by ``mailstack-fetch@<id>.timer`` every ``interval``: one failing
mailbox never stops the others. Messages go to the local account through ``sendmail``, so they
take the same path as any other local mail (aliases, LMTP, one mailbox location).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mailstack.plan import FileSpec
from mailstack.site.model import Fetch, Site

USER = "mailstack-fetch"
CONFIG_DIR = "/etc/mailstack/fetch"
STATE_NAME = "mailstack-fetch"
STATE_DIR = f"/var/lib/{STATE_NAME}"  # systemd's StateDirectory=
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
UNIT = "mailstack-fetch@"


def fetch_id(fetch: Fetch) -> str:
    """A stable instance name: protocol, user and host, with only [a-z0-9.-]."""
    return re.sub(r"[^a-z0-9.-]+", "-", f"{fetch.protocol}-{fetch.user}-{fetch.host}".lower())


def port(fetch: Fetch) -> int:
    return fetch.port or (995 if fetch.protocol == "pop3" else 993)


def interval(fetch: Fetch) -> str:
    """systemd's spelling of the poll interval (90s, 5min, 1h)."""
    return fetch.interval.replace("m", "min") if fetch.interval.endswith("m") else fetch.interval


def py_string(value: str) -> str:
    """A Python string literal: getmail ``eval()``s its tuple settings (mailboxes, arguments,
    password_command), so every string in one is escaped, never pasted between quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def py_tuple(*values: str) -> str:
    """A Python tuple literal of two or more strings."""
    return "(" + ", ".join(py_string(v) for v in values) + ")"


def getmailrc(fetch: Fetch) -> list[tuple[str, list[tuple[str, str]]]]:
    ident = fetch_id(fetch)
    retriever = [
        ("type", "SimplePOP3SSLRetriever" if fetch.protocol == "pop3" else
         "SimpleIMAPSSLRetriever"),
        ("server", fetch.host),
        ("port", str(port(fetch))),
        ("username", fetch.user),
        ("password_command", py_tuple("/bin/cat", f"{CONFIG_DIR}/{ident}.password")),
        ("ca_certs", f"{CONFIG_DIR}/{ident}.ca.crt" if fetch.ca_secret else SYSTEM_CA),
    ]
    if fetch.protocol == "imap":
        retriever.append(("mailboxes", "(" + "".join(f"{py_string(f)}, " for f in fetch.folders) + ")"))
    return [
        ("retriever", retriever),
        ("destination", [
            ("type", "MDA_external"),
            ("path", "/usr/sbin/sendmail"),
            ("arguments", py_tuple("-i", "-f", "%(sender)", "--", fetch.account)),
        ]),
        ("options", [
            ("read_all", "false"),       # only what getmail has not retrieved before
            ("delete", "false" if fetch.keep else "true"),
            ("delivered_to", "false"),
            ("received", "false"),
            ("message_log_syslog", "true"),
        ]),
    ]


def services(site: Site) -> tuple[str, ...]:
    return tuple(f"{UNIT}{fetch_id(f)}.timer" for f in site.fetch)


def pickup(path: str) -> str:
    """Units and their drop-ins: systemd reloads them and the timers restart; getmail reads its
    files afresh on each run."""
    return "systemd" if path.startswith("/etc/systemd/system/") else "none"


def files(site: Site, secrets: Mapping[str, str]) -> list[FileSpec]:
    if not site.fetch:
        return []
    out = [
        FileSpec(f"/etc/systemd/system/{UNIT}.service", "etc/systemd/system/mailstack-fetch@.service.j2",
                 {"user": USER, "config_dir": CONFIG_DIR, "state_dir": STATE_DIR,
                  "state_name": STATE_NAME}),
        FileSpec(f"/etc/systemd/system/{UNIT}.timer", "etc/systemd/system/mailstack-fetch@.timer.j2",
                 {}),
    ]
    for fetch in site.fetch:
        ident = fetch_id(fetch)
        out.append(FileSpec(f"{CONFIG_DIR}/{ident}.getmailrc", "_formats/ini.j2",
                            {"sections": getmailrc(fetch),
                             "header": f"getmail6: {fetch.user} at {fetch.host} -> {fetch.account}"},
                            0o600, USER, USER))
        out.append(FileSpec(f"{CONFIG_DIR}/{ident}.password", "_formats/verbatim.j2",
                            {"text": secrets[fetch.password_secret]}, 0o600, USER, USER))
        if fetch.ca_secret:
            out.append(FileSpec(f"{CONFIG_DIR}/{ident}.ca.crt", "_formats/verbatim.j2",
                                {"text": secrets[fetch.ca_secret]}))
        out.append(FileSpec(f"/etc/systemd/system/{UNIT}{ident}.timer.d/interval.conf",
                            "_formats/ini.j2",
                            {"sections": [("Timer", [("OnActiveSec", "30s"),
                                                     ("OnUnitInactiveSec", interval(fetch))])],
                             "header": f"poll {fetch.user} at {fetch.host} every {fetch.interval}"}))
    return out
