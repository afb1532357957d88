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

Faults (tried with getmail6 6.18.11 on Debian 12):
* A message larger than Postfix accepts: without a limit getmail downloads it on every run,
  sendmail refuses it, getmail keeps no record and exits 1 (a delivery error), forever. With
  ``max_message_size`` getmail leaves it at the provider (it never deletes what it did not
  retrieve), says so only in its message log, and looks again each run. The limit is Postfix's
  ``message_size_limit`` less :data:`SIZE_MARGIN` (what delivery adds: the envelope and a
  Received header; a provider counts CRLF line ends, which only makes the local copy smaller),
  or the site's own ``max_message_size``. ``fetch-run`` (``mailstack/data/fetch_run.py``)
  reads getmail's log after each run and reports each such message once: a warning in the
  unit's journal and a notice to the local account, whose owner can read it at the provider.
* A hung run: ``TimeoutStartSec=`` (:data:`RUN_TIMEOUT`) ends it with SIGTERM, which getmail
  takes as "user aborted": it still writes down what it delivered as it quits. (Its
  ``to_oldmail_on_each_mail`` would do that after each message, but in 6.18.11 it makes getmail
  forget every delivered message when it quits: each run delivered them all again.)
* A failed run: ``OnFailure=`` starts ``mailstack-fetch-failed@<id>.service``, which writes one
  error line naming the mailbox to the journal; the unit stays ``failed`` (``systemctl
  --failed``) until the timer's next run succeeds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mailstack import resources
from mailstack.plan import FileSpec, postfix
from mailstack.site.model import Fetch, Site

USER = "mailstack-fetch"
CONFIG_DIR = "/etc/mailstack/fetch"
STATE_NAME = "mailstack-fetch"
STATE_DIR = f"/var/lib/{STATE_NAME}"  # systemd's StateDirectory=
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
UNIT = "mailstack-fetch@"
FAILED_UNIT = "mailstack-fetch-failed@"
RUNNER = "/usr/local/lib/mailstack/fetch-run"
GETMAIL = "/usr/bin/getmail"
RUN_TIMEOUT = "30min"
"""A run longer than this is hung: getmail's own socket timeout (180 s) ends a silent server,
not one that trickles; 50 MiB at 1 Mbit/s takes 7 minutes."""
SIZE_MARGIN = 16384
"""Bytes kept free below Postfix's message_size_limit, which limits the queue file (postdrop:
"File too large"). Measured: a queue file takes about 2 bytes per line besides the text, as
many as the CRLF line ends a provider counts, plus a few hundred bytes of envelope and headers;
lines of 128 bytes or more take 1 byte more each."""


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


def size_limit(site: Site, fetch: Fetch) -> int:
    """getmail's ``max_message_size`` in bytes (0: none): the site's, else Postfix's
    message_size_limit less :data:`SIZE_MARGIN` (Postfix's 0 means no limit)."""
    if fetch.max_message_size is not None:
        return fetch.max_message_size
    limit = postfix_limit(site)
    return max(limit - SIZE_MARGIN, 1) if limit else 0


def postfix_limit(site: Site) -> int | None:
    """Postfix's message_size_limit as a number (0: none), None if it is not one."""
    value = postfix.message_size_limit(site).strip()
    return int(value) if value.isdigit() else None


def message_log(fetch: Fetch) -> str:
    return f"{STATE_DIR}/{fetch_id(fetch)}/message.log"


def getmailrc(fetch: Fetch, limit: int = 0) -> list[tuple[str, list[tuple[str, str]]]]:
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
            # not to_oldmail_on_each_mail: getmail6 6.18.11 then forgets each message it
            # delivered when it quits, and delivers it again on every run (seen in the lab);
            # a run ended by the start timeout (SIGTERM) still writes its record as it quits
            *([("max_message_size", str(limit))] if limit else []),
            # every message of the run, read by fetch-run (which logs the delivered ones)
            ("message_log", message_log(fetch)),
            ("message_log_verbose", "true"),
            ("message_log_syslog", "false"),
        ]),
    ]


def runner_config(site: Site, fetch: Fetch) -> dict[str, object]:
    """What ``fetch-run`` needs for one mailbox (its JSON file)."""
    ident = fetch_id(fetch)
    return {
        "getmail": GETMAIL,
        "rcfile": f"{CONFIG_DIR}/{ident}.getmailrc",
        "state_dir": f"{STATE_DIR}/{ident}",
        "message_log": message_log(fetch),
        "unit": f"{UNIT}{ident}.service",
        "label": f"{fetch.protocol} {fetch.user} at {fetch.host} -> {fetch.account}",
        "protocol": fetch.protocol,
        "user": fetch.user,
        "host": fetch.host,
        "account": fetch.account,
        "limit": size_limit(site, fetch),
        "notice_from": f"postmaster@{site.domains[0]}",
    }


def services(site: Site) -> tuple[str, ...]:
    return tuple(f"{UNIT}{fetch_id(f)}.timer" for f in site.fetch)


def pickup(path: str) -> str:
    """Units and their drop-ins: systemd reloads them and the timers restart; getmail reads its
    files afresh on each run."""
    return "systemd" if path.startswith("/etc/systemd/system/") else "none"


def files(site: Site, secrets: Mapping[str, str]) -> list[FileSpec]:
    if not site.fetch:
        return []
    unit = {"user": USER, "config_dir": CONFIG_DIR, "state_dir": STATE_DIR,
            "state_name": STATE_NAME, "runner": RUNNER, "timeout": RUN_TIMEOUT,
            "failed_unit": FAILED_UNIT}
    out = [
        FileSpec(f"/etc/systemd/system/{UNIT}.service", "etc/systemd/system/mailstack-fetch@.service.j2",
                 unit),
        FileSpec(f"/etc/systemd/system/{UNIT}.timer", "etc/systemd/system/mailstack-fetch@.timer.j2",
                 {}),
        FileSpec(f"/etc/systemd/system/{FAILED_UNIT}.service",
                 "etc/systemd/system/mailstack-fetch-failed@.service.j2", unit),
        FileSpec(RUNNER, "_formats/verbatim.j2", {"text": runner_text()}, 0o755),
    ]
    for fetch in site.fetch:
        ident = fetch_id(fetch)
        out.append(FileSpec(f"{CONFIG_DIR}/{ident}.json", "_formats/json.j2",
                            {"value": runner_config(site, fetch)}))
        out.append(FileSpec(f"{CONFIG_DIR}/{ident}.getmailrc", "_formats/ini.j2",
                            {"sections": getmailrc(fetch, size_limit(site, fetch)),
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


def runner_text() -> str:
    """The host-side script ``fetch-run`` (a real, linted file of the package)."""
    return (resources.PACKAGE / "data" / "fetch_run.py").read_text(encoding="utf-8")
