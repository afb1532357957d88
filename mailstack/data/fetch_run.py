#!/usr/bin/python3
"""One collection run of a remote mailbox, on the mail host (mailstack-fetch@<id>.service).

Rendered by mailstack to /usr/local/lib/mailstack/fetch-run; python3's standard library only.

``fetch-run CONFIG`` runs getmail6 with the instance's getmailrc, then reads getmail's message
log of that run (``message_log_verbose``: one line per message, retrieved or not). getmail
leaves a message over ``max_message_size`` at the provider and says so only in that log
("not retrieved (oversized)"), every run, without a word on its console. Here each such
message is reported once: a warning line in the unit's journal and a notice to the local
account, whose owner can read it at the provider; ``oversized.json`` in the state directory
remembers what was reported (and ``mailstack status`` reads it). Retrieved messages are logged
to the journal as getmail's syslog line would. The exit status is getmail's.

``fetch-run --failed CONFIG`` runs from ``mailstack-fetch-failed@<id>.service`` (the unit's
``OnFailure=``): one error line in the journal naming the mailbox and how the run ended.

CONFIG is a JSON file written by mailstack's plan: getmail, rcfile, state_dir, message_log,
label, unit, account, limit, notice_from.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

OVERSIZED = re.compile(r"\(([0-9]+) bytes\) msgid (\S+) not retrieved \(oversized\)")
RETRIEVED = re.compile(r"msgid \S+ from <.*delivered to ")
STATE_FILE = "oversized.json"
WARNING, ERROR = "<4>", "<3>"  # sd-daemon(3) priority prefixes: the journal keeps them


def load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def oversized(log_text: str) -> dict[str, int]:
    """The messages getmail left as oversized in this run: msgid -> size in bytes."""
    return {m.group(2): int(m.group(1)) for m in OVERSIZED.finditer(log_text)}


def notice(cfg: dict[str, Any], msgid: str, size: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Mail collection <{cfg['notice_from']}>"
    msg["To"] = cfg["account"]
    msg["Subject"] = f"A message too large for this server waits at {cfg['host']}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid("mailstack-fetch")
    msg["Auto-Submitted"] = "auto-generated"
    paragraphs = [
        f"A message of {size:,} bytes in the mailbox {cfg['user']} at {cfg['host']} "
        f"({cfg['protocol']}) is larger than this server accepts ({cfg['limit']:,} bytes), "
        "so it is not collected.",
        "It stays at the provider: read it there (for example in the provider's webmail), "
        "or ask the sender for a smaller copy.",
        f"This notice is sent once for this message (its id at the provider: {msgid}).",
    ]
    msg.set_content("\n\n".join(textwrap.fill(p, 72) for p in paragraphs) + "\n", cte="8bit")
    return msg


def send(cfg: dict[str, Any], msg: EmailMessage) -> bool:
    """Hand ``msg`` to the local Postfix with a null envelope sender (no bounce loops)."""
    proc = subprocess.run([cfg.get("sendmail", "/usr/sbin/sendmail"), "-i", "-f", "<>", "--",
                           cfg["account"]], input=msg.as_bytes(), capture_output=True,
                          check=False)
    if proc.returncode != 0:
        print(f"{ERROR}could not send the notice to {cfg['account']}: "
              f"{proc.stderr.decode(errors='replace').strip()}", flush=True)
    return proc.returncode == 0


def report(cfg: dict[str, Any], log_text: str, complete: bool) -> dict[str, Any]:
    """Report each oversized message once; return the new contents of the state file.

    ``complete``: getmail went through the whole mailbox, so a message reported before and not
    seen now has left the provider and is forgotten."""
    path = Path(cfg["state_dir"]) / STATE_FILE
    try:
        known: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    now = oversized(log_text)
    state = {k: v for k, v in known.items() if k in now} if complete else dict(known)
    for msgid, size in now.items():
        if msgid in known:
            continue
        sent = send(cfg, notice(cfg, msgid, size))
        print(f"{WARNING}{cfg['label']}: a message of {size} bytes (msgid {msgid}) is over the "
              f"limit of {cfg['limit']} bytes: left at the provider, not collected; "
              + (f"a notice went to {cfg['account']}" if sent else "no notice could be sent"),
              flush=True)
        if sent:
            state[msgid] = {"size": size, "reported": int(time.time())}
    tmp = path.with_name(STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return state


def run(cfg: dict[str, Any]) -> int:
    log = Path(cfg["message_log"])
    log.write_text("", encoding="utf-8")  # this run's lines only
    proc = subprocess.run([cfg["getmail"], "--quiet", "--getmaildir", cfg["state_dir"],
                           "--rcfile", cfg["rcfile"]], check=False)
    text = log.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        if RETRIEVED.search(line):
            print(line.split(" ", 2)[-1], flush=True)  # without getmail's own timestamp
    report(cfg, text, complete=proc.returncode == 0)
    return proc.returncode


def failed(cfg: dict[str, Any]) -> int:
    show = subprocess.run(["systemctl", "show", "--property=Result,ExecMainCode,ExecMainStatus",
                           cfg["unit"]], capture_output=True, text=True, check=False)
    props = dict(line.split("=", 1) for line in show.stdout.splitlines() if "=" in line)
    status = props.get("ExecMainStatus", "?")
    how = (f"killed by signal {status}" if props.get("ExecMainCode") == "2"  # CLD_KILLED
           else f"exit status {status}")
    print(f"{ERROR}{cfg['label']}: the collection failed (result: "
          f"{props.get('Result', 'unknown')}, {how}); journalctl -u {cfg['unit']} says why; "
          "the timer tries again", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--failed":
        return failed(load(argv[1]))
    if len(argv) != 1:
        print("usage: fetch-run [--failed] CONFIG", file=sys.stderr)
        return 2
    return run(load(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
