"""`mailstack audit`: Dovecot's audit trail (mail_log, plan/audit.py) of one user, read from the
journal of each mail host over SSH (one round trip per host, as `mailstack status`).

Lines as Dovecot 2.3.19 writes them (seen in the lab image)::

    imap(anna@x.test)<447><O3EpXZBhSo1/AAAB>: delete: box=INBOX, uid=1, msgid=<t@x>, size=46
    imap(anna@x.test)<447><O3EpXZBhSo1/AAAB>: expunge: box=INBOX, uid=1, msgid=<t@x>, size=46
    imap(anna@x.test)<447><O3EpXZBhSo1/AAAB>: copy from INBOX: box=Archive, uid=1, msgid=...
    imap(anna@x.test)<447><O3EpXZBhSo1/AAAB>: Mailbox renamed: Foo -> Bar
    imap(anna@x.test)<447><O3EpXZBhSo1/AAAB>: Mailbox deleted: Bar

(an IMAP MOVE is the copy line and an expunge from the source). The user is the one between
the parentheses, matched whole: ``anna@x`` never shows ``hanna@x``'s lines.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailstack import core
from mailstack.errors import InputError
from mailstack.plan import audit as audit_plan

# Runs on the host as `python3 -c SCRIPT JSON` (JSON: {"ident", "needle", "since"}): the
# journal's lines of Dovecot that contain the needle ("(user)<"), as [[usec, message], ...].
SCRIPT = r"""
import json, subprocess, sys
job = json.loads(sys.argv[1])
cmd = ["journalctl", "-t", job["ident"], "-o", "json", "--no-pager",
       "--output-fields=MESSAGE"]
if job.get("since"):
    cmd += ["--since", job["since"]]
p = subprocess.run(cmd, capture_output=True)
lines = []
for raw in p.stdout.splitlines():
    try:
        e = json.loads(raw)
    except ValueError:
        continue
    m = e.get("MESSAGE")
    if isinstance(m, list):
        m = bytes(m).decode("utf-8", "replace")
    if isinstance(m, str) and job["needle"] in m:
        lines.append([e.get("__REALTIME_TIMESTAMP", "0"), m])
print(json.dumps({"rc": p.returncode, "error": p.stderr.decode("utf-8", "replace")[-300:],
                  "lines": lines}))
"""

_LINE = re.compile(r"^(?P<service>[a-z0-9_-]+)\((?P<user>[^()]*)\)(?:<[^>]*>)*: "
                   r"(?P<rest>.*)$")
_MAIL_EVENT = re.compile(r"^(?P<event>delete|undelete|expunge|save|copy from (?P<src>.*?)|"
                         r"flag_change|append): (?P<fields>.*)$")
_MAILBOX_EVENT = re.compile(r"^Mailbox (?P<what>created|deleted|renamed): (?P<box>.*)$")
_FIELD = re.compile(r"(?:^|, )(?P<key>uid|box|msgid|size|vsize|flags|from|subject)=")


@dataclass(frozen=True)
class Entry:
    """One audit line: when, where, who, what, in which folder, which message."""

    time: str
    host: str
    service: str
    user: str
    event: str
    folder: str
    msgid: str = ""
    uid: str = ""
    size: str = ""

    def line(self) -> str:
        return "  ".join([self.time, self.host, self.service, self.event, self.folder,
                          self.msgid or "-"])


def fields(text: str) -> dict[str, str]:
    """``box=INBOX, uid=1, msgid=<a, b@x>, size=46`` -> a dict (values may hold ", ")."""
    marks = list(_FIELD.finditer(text))
    out = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[m.group("key")] = text[m.end():end]
    return out


def parse(message: str, *, host: str = "", time: str = "") -> Entry | None:
    """One Dovecot log message as an :class:`Entry`, or None when it is no mail_log line."""
    m = _LINE.match(message)
    if not m:
        return None
    rest = m.group("rest")
    ev = _MAIL_EVENT.match(rest)
    if ev:
        f = fields(ev.group("fields"))
        event = "copy from " + ev.group("src") if ev.group("src") is not None else \
            ev.group("event")
        return Entry(time, host, m.group("service"), m.group("user"), event, f.get("box", ""),
                     f.get("msgid", ""), f.get("uid", ""), f.get("size", ""))
    mb = _MAILBOX_EVENT.match(rest)
    if mb:
        return Entry(time, host, m.group("service"), m.group("user"),
                     f"mailbox {mb.group('what')}", mb.group("box"))
    return None


def entries(host: str, seen: dict[str, Any], user: str) -> list[Entry]:
    """The audit entries of ``user`` (exactly) from what SCRIPT printed on ``host``."""
    out = []
    for usec, message in seen.get("lines") or []:
        when = datetime.datetime.fromtimestamp(int(usec) / 1e6, datetime.UTC)
        e = parse(message, host=host, time=f"{when:%Y-%m-%d %H:%M:%S}")
        if e is not None and e.user == user:
            out.append(e)
    return out


def job(user: str, since: str | None) -> str:
    return json.dumps({"ident": audit_plan.SYSLOG_IDENTIFIER, "needle": f"({user})<",
                       "since": since or ""})


def read(target: Any, user: str, since: str | None, *, lab: bool) -> list[Entry]:
    """The audit entries of ``user`` on one host (one SSH round trip)."""
    from mailstack.errors import ToolError
    from mailstack.status import _ssh

    seen = json.loads(_ssh(target, ["python3", "-c", SCRIPT, job(user, since)], lab=lab))
    if seen.get("rc"):
        raise ToolError(f"{target.key}: journalctl failed: {seen.get('error', '').strip()}")
    return entries(target.key, seen, user)


def audit(site_file: str | Path, user: str, *, since: str | None = None, lab: bool = False,
          inventory: str | Path | None = None, build_dir: str | Path = "build",
          secrets_dir: str | Path | None = None) -> list[Entry]:
    """What ``user`` deleted, expunged, copied or moved, and which folders they deleted or
    renamed, from the journal of every host with the imap role."""
    from mailstack.verify import host_targets

    _, plan = core.plan(site_file, secrets_dir=secrets_dir)
    user = user.strip().lower()  # Dovecot logs the login as auth_username_format %Lu makes it
    if not user or any(c in user for c in "()<> \n"):
        raise InputError(f"--user: not an account's address: {user!r}")
    targets = host_targets(site_file, plan, lab=lab, inventory=inventory, build_dir=build_dir,
                           verb="audit")
    out: list[Entry] = []
    for key, host in sorted(plan.hosts.items()):
        if "imap" in host.roles:
            out += read(targets[key], user, since, lab=lab)
    return sorted(out, key=lambda e: e.time)


def text(user: str, found: list[Entry]) -> str:
    if not found:
        return f"no audit lines for {user}"
    return "\n".join(e.line() for e in found)
