"""`mailstack status`: what the running site's unattended jobs say, read over SSH (or in the lab).

Today: the remote mailboxes. For each one, from its host: whether the last collection
failed (systemd's state of ``mailstack-fetch@<id>.service``, and why), whether its timer runs,
and the oversized messages ``fetch-run`` left at the provider (its ``oversized.json``).
One SSH round trip per host; nothing is changed.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailstack import core
from mailstack.errors import ToolError
from mailstack.plan import fetch as fetch_plan
from mailstack.site.model import Fetch, Site

# Runs on the host as `python3 -c SCRIPT JSON` (JSON: [[unit, timer, state dir], ...]).
SCRIPT = r"""
import json, subprocess, sys
out = {}
for unit, timer, state in json.loads(sys.argv[1]):
    props = {}
    for name in (unit, timer):
        p = subprocess.run(["systemctl", "show", "-p", "LoadState,ActiveState,Result,"
                            "ExecMainCode,ExecMainStatus,InactiveEnterTimestamp", name],
                           capture_output=True, text=True)
        props[name] = dict(l.split("=", 1) for l in p.stdout.splitlines() if "=" in l)
    try:
        with open(state + "/oversized.json") as f:
            over = json.load(f)
    except (OSError, ValueError):
        over = {}
    out[unit] = {"unit": props[unit], "timer": props[timer], "oversized": over}
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Mailbox:
    """One remote mailbox as its host sees it."""

    host: str
    label: str
    unit: str
    ok: bool
    lines: tuple[str, ...]


@dataclass
class StatusReport:
    mailboxes: list[Mailbox] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.mailboxes)

    def text(self) -> str:
        if not self.mailboxes:
            return "the site collects no remote mailboxes"
        return "\n".join(line for m in self.mailboxes for line in m.lines)


def _units(fetch: Fetch) -> tuple[str, str, str]:
    ident = fetch_plan.fetch_id(fetch)
    return (f"{fetch_plan.UNIT}{ident}.service", f"{fetch_plan.UNIT}{ident}.timer",
            f"{fetch_plan.STATE_DIR}/{ident}")


def describe(site: Site, host: str, seen: Mapping[str, Any]) -> list[Mailbox]:
    """The report lines of ``host``'s mailboxes from what SCRIPT printed there."""
    out = []
    for f in site.fetch:
        unit, timer, _ = _units(f)
        label = f"{f.protocol} {f.user} at {f.host} -> {f.account}"
        got = seen.get(unit) or {}
        props, tprops = got.get("unit") or {}, got.get("timer") or {}
        lines, ok = [], True
        if props.get("LoadState") != "loaded":
            lines.append(f"{host}: {label}: not installed ({unit} is "
                         f"{props.get('LoadState', 'unknown')}): apply the site")
            out.append(Mailbox(host, label, unit, False, tuple(lines)))
            continue
        since = props.get("InactiveEnterTimestamp") or "never"
        if props.get("ActiveState") == "failed":
            ok = False
            how = (f"killed by signal {props.get('ExecMainStatus')}"
                   if props.get("ExecMainCode") == "2" else
                   f"exit status {props.get('ExecMainStatus')}")
            lines.append(f"{host}: {label}: FAILED (result: {props.get('Result')}, {how}; "
                         f"{since}): journalctl -u {unit}")
        elif props.get("ActiveState") == "activating":
            lines.append(f"{host}: {label}: collecting now")
        else:
            lines.append(f"{host}: {label}: ok (last run ended {since})")
        if tprops.get("ActiveState") != "active":
            ok = False
            lines.append(f"{host}: {label}: the timer {timer} is "
                         f"{tprops.get('ActiveState', 'unknown')}: nothing is collected")
        for msgid, info in sorted((got.get("oversized") or {}).items()):
            when = datetime.datetime.fromtimestamp(int(info.get("reported", 0)), datetime.UTC)
            lines.append(f"{host}: {label}: a message of {info.get('size')} bytes (msgid "
                         f"{msgid}) is over the limit and waits at the provider (notice sent "
                         f"{when:%Y-%m-%d %H:%M} UTC)")
        out.append(Mailbox(host, label, unit, ok, tuple(lines)))
    return out


def status(site_file: str | Path, *, lab: bool = False, inventory: str | Path | None = None,
           build_dir: str | Path = "build", secrets_dir: str | Path | None = None
           ) -> StatusReport:
    """Ask each host that collects remote mailboxes how they fare."""
    from mailstack.verify import host_targets

    site, plan = core.plan(site_file, secrets_dir=secrets_dir)
    targets = host_targets(site_file, plan, lab=lab, inventory=inventory, build_dir=build_dir,
                           verb="status")
    report = StatusReport()
    for key, host in sorted(plan.hosts.items()):
        if "mta" not in host.roles or not site.fetch:
            continue
        job = json.dumps([list(_units(f)) for f in site.fetch])
        seen = json.loads(_ssh(targets[key], ["python3", "-c", SCRIPT, job], lab=lab))
        report.mailboxes += describe(site, key, seen)
    return report


def _ssh(target: Any, command: list[str], *, lab: bool) -> str:
    """Run ``command`` on ``target``; the lab's hosts are known by their key alone (as its
    Ansible inventory does), real servers by the user's SSH configuration and known_hosts."""
    import shlex

    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
    if lab:
        argv += ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null"]
    if target.ssh_key:
        argv += ["-i", str(target.ssh_key), "-o", "IdentitiesOnly=yes"]
    remote = " ".join(shlex.quote(c) for c in command)
    if target.ssh_user != "root":
        remote = "sudo -n " + remote
    argv += [f"{target.ssh_user}@{target.address}", remote]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ToolError(f"{target.key} ({target.address}): ssh failed: {err}") from None
    if proc.returncode != 0:
        raise ToolError(f"{target.key} ({target.address}): ssh failed: "
                        f"{proc.stderr.strip() or proc.returncode}")
    return proc.stdout
