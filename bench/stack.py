"""Measure the stack mailstack generates, in one lab and one run: apply, delivery and logins.

    .venv/bin/python bench/stack.py [--parts apply,delivery,logins] [--messages N] [--pairs K]
                                    [--sizes 100,10000] [--keep]

The lab is the bundled example under its own site name (`lab up` with the prepared image, so
`make image` first), on the lab's --internal network; nothing here reaches outside it.

- **apply**: the first apply, a re-apply that changes nothing, and a one-relay change (a new
  recipient route to the head-office relay): seconds and the tasks that ran (Ansible's ok
  count) and changed, per apply.
- **delivery**: `smtp-source` in the lab's client sends N messages to port 25 in 10 sessions
  (one connection each, `-d`), to 10 accounts, from a sender outside the site; the time runs
  from the start of sending until every message is in its Maildir, counted on the mail host by
  Postfix's queue ID (all of them, exactly once). The same daemons then run with flat tables: the
  Postfix LDAP tables dumped with `postmap -q -` into `hash:` maps, Dovecot's LDAP passdb and
  userdb into `passwd-file`s with the same password hashes; each switch is a `postfix reload`
  and `doveadm reload`, done before both kinds of run. K interleaved pairs (LDAP first in even
  pairs, flat first in odd ones) per directory size; the ratio LDAP/flat per pair is reported as
  median and range. The directory is filled up to each size with entries shaped like the
  example's first account (ldapadd as root over ldapi; the bench's own, never applied).
  LDAP searches per message are counted from slapd's stats log.
- **logins**: IMAP logins a second over TLS (port 993: connect, LOGIN, LOGOUT) from 4 processes
  in the client, with the example's accounts, LDAP (auth_bind) vs passwd-file, with Dovecot's
  auth cache on (the site's setting) and off (auth_cache_size = 0), K interleaved pairs each.

Figures, not a pass/fail test; they depend on the machine (print it with them).
Targets (issue 14): delivery LDAP/flat >= 0.9, logins LDAP/flat >= 0.8 with the cache on,
a no-change apply <= 0.2x the first and <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailstack import apply, lab, secrets  # noqa: E402
from mailstack.container import Container  # noqa: E402
from mailstack.site.load import load_site  # noqa: E402

EXAMPLE = ROOT / "inventories/branch-office/site.yml"
HERE = Path(__file__).resolve().parent / "stack"
SENDER = "partner@outside.example"
ROUTE_BEFORE = '  recipients: {"@head-office.example": head-office}'
ROUTE_AFTER = '  recipients: {"@head-office.example": head-office, "@branch2.example": head-office}'


def say(line: str) -> None:
    print(line, flush=True)


def table(title: str, header: list[str], rows: list[list[str]], summary: str) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    say(f"\n{title}")
    for i, row in enumerate([header, *rows]):
        say("  " + "  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w)
                             for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            say("  " + "  ".join("-" * w for w in widths))
    say(f"=> {summary}")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


class Lab:
    """The example in the lab, with shells on its mail host and its client."""

    def __init__(self, root: Path, *, reuse: bool = False) -> None:
        self.root = root
        self.site = root / "site.yml"
        self.build = root / "build"
        if not reuse:
            self.site.write_text(EXAMPLE.read_text(encoding="utf-8").replace(
                "site: krasnoyarsk", f"site: bench{uuid.uuid4().hex[:6]}", 1), encoding="utf-8")
            lab.ensure_outside_secrets(self.site, build_dir=self.build)
        self.model = load_site(self.site)
        self.name = self.model.site
        if not reuse:
            secrets.generate(self.model, root / "secrets")
        self.domain = self.model.domains[0]
        self.up_seconds = 0.0

    def up(self, *, reuse: bool = False) -> None:
        started = time.monotonic()
        self.state = (lab.state(self.site, build_dir=self.build) if reuse
                      else lab.up(self.site, build_dir=self.build))
        self.up_seconds = time.monotonic() - started
        self.mail = Container(self.state.host("mail").name)
        self.client = Container(self.state.client.name)

    def down(self) -> None:
        lab.down(self.site, build_dir=self.build)

    def apply(self) -> apply.ApplyReport:
        report = apply.apply(self.site, inventory=self.state.inventory, build_dir=self.build,
                             out=lambda line: None)
        if not report.ok:
            raise SystemExit("\n".join(report.lines()))
        return report

    def run(self, container: Container, script: str, *args: str, stdin: str = "",
            timeout: float = 600) -> str:
        """Run a script of bench/stack/ with python3 in ``container``; its stdout."""
        proc = subprocess.run(
            ["podman", "exec", "-i", container.name, "python3", "-c",
             (HERE / script).read_text(encoding="utf-8"), *args],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{script} on {container.name} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def password(self, mail: str) -> str:
        return (self.root / "secrets/accounts" / mail).read_text(encoding="utf-8").strip()


# -- apply --------------------------------------------------------------------------------
def bench_apply(bench: Lab) -> None:
    rows = []

    def one(what: str) -> float:
        report = bench.apply()
        ran = sum(h.ok for h in report.hosts.values())
        rows.append([what, f"{report.seconds:.1f}", str(ran), str(report.changed)])
        return report.seconds

    first = one("first apply")
    again = one("no change")
    text = bench.site.read_text(encoding="utf-8")
    assert ROUTE_BEFORE in text
    bench.site.write_text(text.replace(ROUTE_BEFORE, ROUTE_AFTER), encoding="utf-8")
    one("one relay route added")
    table("apply (1 host; seconds, tasks that ran and changed)",
          ["apply", "seconds", "tasks ran", "changed"], rows,
          f"no change took {again / first:.2f}x the first apply ({again:.1f} s; "
          "target <= 0.2x and <= 10 s)")


# -- delivery -----------------------------------------------------------------------------
class Variants:
    """Switches the mail host between the site's LDAP configuration and the flat one."""

    def __init__(self, bench: Lab) -> None:
        self.bench = bench

    def prepare(self) -> None:
        """Dump the directory into flat tables and write both configurations (again after the
        directory grew)."""
        say(self.bench.run(self.bench.mail, "flat.py", "prepare").strip())

    def use(self, variant: str, cache: bool = True) -> None:
        self.bench.run(self.bench.mail, "flat.py", "use", variant, "on" if cache else "off")


def fill(bench: Lab, entries: int) -> int:
    """Add the bench's accounts until the suffix holds about ``entries`` entries; the count."""
    out = bench.run(bench.mail, "fill.py", str(entries), timeout=1800)
    return int(json.loads(out.strip().splitlines()[-1])["entries"])


def recipients(bench: Lab) -> list[str]:
    """Ten accounts: the example's two, and eight of the bench's spread over the directory."""
    out = bench.run(bench.mail, "fill.py", "list")
    extra = json.loads(out)["accounts"]
    step = max(1, len(extra) // 8)
    return [f"ivan@{bench.domain}", f"olga@{bench.domain}", *extra[::step][:8]]


def deliver(bench: Lab, count: int, to: list[str]) -> dict[str, float]:
    """Send ``count`` messages in 10 sessions; wait until all landed; the figures."""
    per = count // len(to)
    watcher = subprocess.Popen(
        ["podman", "exec", "-i", bench.mail.name, "python3", "-c",
         (HERE / "landed.py").read_text(encoding="utf-8")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert watcher.stdin and watcher.stdout
    watcher.stdin.write(json.dumps({"to": to, "each": per, "timeout": 300}))
    watcher.stdin.close()
    assert watcher.stdout.readline().strip() == "ready"
    searches_before = slapd_searches(bench)
    cpu_before = cpu(bench)
    started = time.time()
    senders = [subprocess.Popen(
        ["podman", "exec", bench.client.name, "/usr/sbin/smtp-source", "-d", "-s", "1",
         "-m", str(per), "-l", "2000", "-f", SENDER, "-t", rcpt,
         f"{bench.state.host('mail').ip}:25"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rcpt in to]
    for proc in senders:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"smtp-source failed: {err}")
    sent = time.time()
    out = watcher.stdout.read()
    err = watcher.stderr.read() if watcher.stderr else ""
    if watcher.wait(timeout=600) != 0:
        raise SystemExit(f"landed.py: {err}\n{out}")
    result = json.loads(out.strip().splitlines()[-1])
    used = {k: v - cpu_before[k] for k, v in cpu(bench).items()}
    searches = slapd_searches(bench) - searches_before
    total = per * len(to)
    if result["landed"] != total or result["distinct"] != total:
        raise SystemExit(f"not all landed exactly once: {result} of {total}")
    seconds = result["done_at"] - started
    return {"messages": total, "seconds": seconds, "rate": total / seconds,
            "sending": sent - started, "searches": searches / total,
            **{f"{k}_ms": v * 1000 / total for k, v in used.items()}}


def cpu(bench: Lab) -> dict[str, float]:
    """CPU seconds used so far: the whole mail host (its container), and slapd and journald in
    it (the directory's own work and its log's)."""
    proc = subprocess.run(["podman", "stats", "--no-stream", "--format", "{{.CPUNano}}",
                           bench.mail.name], capture_output=True, text=True, check=True)
    ticks = bench.mail.exec(["sh", "-c", "for n in slapd systemd-journal; do "
                             "cut -d' ' -f14,15 /proc/$(pgrep -xo $n)/stat; done"], timeout=60)
    slapd, journald = (sum(int(t) for t in line.split()) / os.sysconf("SC_CLK_TCK")
                       for line in ticks.stdout.splitlines())
    return {"host": int(proc.stdout.strip()) / 1e9, "slapd": slapd, "journald": journald}


def slapd_searches(bench: Lab) -> int:
    """How many searches slapd has logged since it started (its stats log, in the journal)."""
    proc = bench.mail.exec(["sh", "-c", "journalctl -u slapd -o cat --no-pager "
                            "| grep -c ' SRCH base=' || true"], timeout=120)
    return int(proc.stdout.strip() or 0)


def journal_dropped(bench: Lab) -> str:
    """journald's own count of the lines it dropped (its rate limit per unit), so far."""
    proc = bench.mail.exec(["sh", "-c", "journalctl -o cat --no-pager -u systemd-journald "
                            "| grep -o 'Suppressed [0-9]* messages from [^ ]*' || true"],
                           timeout=120)
    total: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        _, n, _, _, unit = line.split()
        total[unit] = total.get(unit, 0) + int(n)
    return ", ".join(f"{unit} {n}" for unit, n in sorted(total.items()))


def bench_delivery(bench: Lab, sizes: list[int], count: int, pairs: int) -> None:
    variants = Variants(bench)
    for size in sizes:
        entries = fill(bench, size)
        variants.prepare()
        to = recipients(bench)
        rows, ratios, cpu_ratios = [], [], []
        for pair in range(pairs):
            order = ["ldap", "flat"] if pair % 2 == 0 else ["flat", "ldap"]
            got: dict[str, dict[str, float]] = {}
            for variant in order:
                variants.use(variant)
                got[variant] = deliver(bench, count, to)
            ratios.append(got["ldap"]["rate"] / got["flat"]["rate"])
            cpu_ratios.append(got["flat"]["host_ms"] / got["ldap"]["host_ms"])
            rows.append([str(pair + 1), " then ".join(order),
                         f"{got['ldap']['rate']:.0f}", f"{got['flat']['rate']:.0f}",
                         f"{ratios[-1]:.2f}", f"{got['ldap']['host_ms']:.1f}",
                         f"{got['flat']['host_ms']:.1f}", f"{got['ldap']['slapd_ms']:.2f}",
                         f"{got['ldap']['journald_ms']:.2f}",
                         f"{got['flat']['journald_ms']:.2f}",
                         f"{got['ldap']['searches']:.1f}"])
        variants.use("ldap")
        dropped = journal_dropped(bench)
        table(f"delivery: {count} messages in 10 sessions, {entries} directory entries "
              "(messages/s end to end; CPU ms per message: the mail host, and slapd and "
              "journald in it; LDAP searches per message from slapd's log)",
              ["pair", "order", "LDAP msg/s", "flat msg/s", "LDAP/flat", "CPU LDAP",
               "CPU flat", "slapd", "journald LDAP", "journald flat", "searches"], rows,
              f"{entries} entries: LDAP/flat = {spread(ratios)} in messages/s, "
              f"{spread(cpu_ratios)} in CPU per message (flat/LDAP), median (range) over "
              f"{pairs} pairs (target >= 0.9)"
              + (f"; journald dropped log lines: {dropped}" if dropped else ""))


# -- logins -------------------------------------------------------------------------------
def logins(bench: Lab, seconds: float) -> dict[str, float]:
    users = [f"ivan@{bench.domain}", f"olga@{bench.domain}"]
    job = {"host": bench.state.host("mail").ip, "seconds": seconds, "workers": 4,
           "users": [[u, bench.password(u)] for u in users],
           "ca": (bench.build / bench.name / "mail/etc/mailstack/tls/ca.crt").read_text()}
    out = bench.run(bench.client, "logins.py", stdin=json.dumps(job), timeout=seconds + 120)
    result = json.loads(out.strip().splitlines()[-1])
    if result["failed"]:
        raise SystemExit(f"logins failed: {result}")
    return result


def bench_logins(bench: Lab, pairs: int, seconds: float) -> None:
    variants = Variants(bench)
    variants.prepare()
    for cache in (True, False):
        rows, ratios = [], []
        for pair in range(pairs):
            order = ["ldap", "flat"] if pair % 2 == 0 else ["flat", "ldap"]
            got = {}
            for variant in order:
                variants.use(variant, cache=cache)
                got[variant] = logins(bench, seconds)
            ratios.append(got["ldap"]["rate"] / got["flat"]["rate"])
            rows.append([str(pair + 1), " then ".join(order), f"{got['ldap']['rate']:.0f}",
                         f"{got['flat']['rate']:.0f}", f"{ratios[-1]:.2f}"])
        state = "on" if cache else "off"
        table(f"IMAP logins over TLS (993), 4 processes, {seconds:.0f} s a run, auth cache "
              f"{state} (logins/s)", ["pair", "order", "LDAP", "passwd-file", "LDAP/flat"],
              rows, f"auth cache {state}: LDAP/flat = {spread(ratios)} median (range)"
              + (" (target >= 0.8)" if cache else ""))
    variants.use("ldap")


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node()}: {cpus} cores, {mem:.0f} GiB, {platform.platform()}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="apply,delivery,logins")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument("--login-seconds", type=float, default=4.0)
    parser.add_argument("--keep", action="store_true", help="leave the lab up (and say where)")
    parser.add_argument("--reuse", metavar="DIR", help="a lab kept by --keep (its folder)")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    say(f"machine: {machine()}")
    root = Path(args.reuse or tempfile.mkdtemp(prefix="mailstack-bench-"))
    bench = Lab(root, reuse=bool(args.reuse))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("apply", lambda: bench_apply(bench)),
        ("delivery", lambda: bench_delivery(bench, [int(s) for s in args.sizes.split(",")],
                                            args.messages, args.pairs)),
        ("logins", lambda: bench_logins(bench, args.pairs, args.login_seconds)),
    ]
    try:
        bench.up(reuse=bool(args.reuse))
        say(f"lab up in {bench.up_seconds:.1f} s ({bench.name})")
        if "apply" not in parts and not args.reuse:
            bench.apply()
        for name, step in steps:
            if name in parts:
                started = time.monotonic()
                step()
                say(f"[{name}: {time.monotonic() - started:.0f} s]")
    finally:
        if args.keep or args.reuse:
            say(f"lab kept: --reuse {root} (mailstack lab down {bench.site} --build {bench.build})")
        else:
            bench.down()
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
