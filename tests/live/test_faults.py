"""Faults lose nothing: daemons that stop or restart under mail, and applies that fail.

One lab for the module (the example under its own site name, `lab up` with the prepared image),
applied once; the cases run in order on it, each starting with every service up (no snapshot
restore: the budget of `make test`). Mail comes from the lab's client on port 25 (outside
`mynetworks`, a sender outside the site's domains) and is counted by Message-ID in the Maildirs
on the host; only messages the server acknowledged with 250 count: one of them missing is a
loss (a failure), a second copy is a duplicate (counted and printed, not a failure). Figures
are printed (pytest -s).

Logins during the LDAP outage are tried from the mail host itself over loopback, with the right
password: the client must never look like a password guesser (fail2ban watches it).

The 1,000-message restart matrix is marked ``slow`` (`make faults`); `make test` keeps one
restart case (Dovecot, 200 messages).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailstack import apply, lab
from mailstack.container import Container
from mailstack.errors import ToolError
from tests.conftest import LabSite, example_lab_site, live

pytestmark = live(ssh=True, ansible=True)

SCRIPTS = Path(__file__).parent / "scripts"
DOMAIN = "krasnoyarsk.example.org"
IVAN, OLGA = f"ivan@{DOMAIN}", f"olga@{DOMAIN}"
MAILDIRS = [f"/var/vmail/{DOMAIN}/{user}/Maildir" for user in ("ivan", "olga")]
SENDER = "partner@outside.example"
QUEUE = "/var/spool/postfix"


@dataclass
class Batch:
    """What the sender saw: the Message-IDs acknowledged with 250 and the others' answers."""

    run: str
    count: int
    acked: list[str]
    refused: dict[str, str]
    seconds: float
    answers_250: dict[str, str] = field(default_factory=dict)

    def answers(self) -> dict[str, int]:
        """How often each refusal was seen (the first 40 characters of the answer)."""
        out: dict[str, int] = {}
        for answer in self.refused.values():
            out[answer[:40]] = out.get(answer[:40], 0) + 1
        return out


@dataclass
class Tally:
    batch: Batch
    copies: dict[str, int]
    seconds: float
    lost: list[str] = field(init=False)
    duplicates: int = field(init=False)
    unacked_delivered: int = field(init=False)

    def __post_init__(self) -> None:
        self.lost = [mid for mid in self.batch.acked if not self.copies.get(mid)]
        self.duplicates = sum(n - 1 for n in self.copies.values() if n > 1)
        acked = set(self.batch.acked)
        self.unacked_delivered = sum(1 for mid in self.copies if mid not in acked)

    def line(self, name: str) -> str:
        return (f"[{name}: sent {self.batch.count}, acknowledged {len(self.batch.acked)}, "
                f"delivered {sum(1 for m in self.batch.acked if self.copies.get(m))}, "
                f"lost {len(self.lost)}, duplicates {self.duplicates}, delivered without a 250 "
                f"{self.unacked_delivered}; refused {self.batch.answers()}; sending "
                f"{self.batch.seconds:.1f} s, all delivered after {self.seconds:.1f} s]")


class Faults(LabSite):
    def __init__(self, site: Path, build: Path) -> None:
        super().__init__(site, build)
        self.client = Container(self.state.client.name)
        self.runs = 0

    def ready(self) -> None:
        """Every service up (a case that failed half-way may have left one stopped)."""
        self.sh("systemctl start slapd postfix dovecot ssh.service")

    def try_sh(self, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.mail.exec(["sh", "-c", script], timeout=timeout)

    def apply(self, site: Path | None = None, out: Callable[[str], object] | None = None
              ) -> apply.ApplyReport:
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            if out is not None:
                out(line)

        try:
            return apply.apply(site or self.site, inventory=self.state.inventory,
                               build_dir=self.build, out=keep)
        finally:
            print("\n".join(lines[-12:]))

    # -- mail ---------------------------------------------------------------------------
    def run_name(self) -> str:
        self.runs += 1
        return f"run{self.runs}-{time.monotonic_ns() % 10**8}"

    def send(self, count: int, *, to: tuple[str, ...] = (IVAN, OLGA), per: int = 20,
             rate: float = 0, at: int | None = None, fault: Callable[[], object] | None = None
             ) -> Batch:
        """Send ``count`` messages from the client (at most ``rate`` a second); after message
        ``at`` run ``fault`` (while the sender goes on)."""
        run = self.run_name()
        proc = subprocess.Popen(
            ["podman", "exec", "-i", self.client.name, "python3", "-c",
             (SCRIPTS / "send_batch.py").read_text(encoding="utf-8")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdin and proc.stdout
        proc.stdin.write(json.dumps({"host": self.state.host("mail").ip, "from": SENDER,
                                     "to": list(to), "count": count, "run": run,
                                     "per_connection": per, "rate": rate}))
        proc.stdin.close()
        result = None
        for line in proc.stdout:
            if line.startswith("{"):
                result = json.loads(line)
            elif fault is not None and line.strip() == f"sent {at}":
                fault()
        proc.wait(timeout=60)
        assert result is not None, proc.stderr.read() if proc.stderr else "no result"
        return Batch(run, count, result["acked"], result["refused"], result["seconds"],
                     result.get("answers", {}))

    def copies(self, run: str) -> dict[str, int]:
        proc = self.mail.exec(["python3", "-c", (SCRIPTS / "count_ids.py").read_text(),
                               f"<{run}.", *MAILDIRS], timeout=60)
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    def queued(self) -> int:
        return len(self.sh("postqueue -j").splitlines())

    def wait_delivered(self, batch: Batch, timeout: float = 120.0) -> Tally:
        """Wait until every acknowledged message is in a mailbox and the queue is empty (no
        nudging: what the host does by itself); the tally at that point or at the deadline."""
        started = time.monotonic()
        while True:
            copies = self.copies(batch.run)
            done = all(copies.get(mid) for mid in batch.acked) and self.queued() == 0
            if done or time.monotonic() - started > timeout:
                return Tally(batch, copies, time.monotonic() - started)
            time.sleep(1)

    def deferred_since(self, since: float) -> int:
        """How many deliveries Postfix deferred since ``since`` (time.time())."""
        return int(self.sh(f"journalctl --since @{since:.0f} --no-pager -o cat | "
                           "grep -c 'status=deferred' || true").strip() or 0)

    def stop(self, unit: str) -> None:
        self.sh(f"systemctl stop {unit}")

    def start(self, unit: str) -> None:
        self.sh(f"systemctl start {unit}")


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    root = tmp_path_factory.mktemp("faults")
    site, build = example_lab_site(root, "flt")
    try:
        started = time.monotonic()
        state = lab.up(site, build_dir=build)
        report = apply.apply(site, inventory=state.inventory, build_dir=build,
                             out=lambda line: None)
        assert report.ok
        print(f"\n[faults lab: up and applied in {time.monotonic() - started:.1f} s]")
        yield Faults(site, build)
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


def no_loss(tally: Tally, name: str, faults: Faults | None = None) -> None:
    print(tally.line(name))
    if tally.lost and faults is not None:  # what the host logged about them
        for mid in tally.lost[:3]:
            answer = tally.batch.answers_250.get(mid, "")
            print(f"{mid}: the server answered {answer!r}")
            queue_id = answer.rsplit(" ", 1)[-1] if "queued as" in answer else mid
            print(faults.try_sh("journalctl -o short-precise --no-pager | grep -F "
                                f"{shlex.quote(queue_id)}").stdout)
    assert tally.lost == [], f"{name}: {len(tally.lost)} acknowledged messages lost: " \
                             f"{tally.lost[:5]}"


def loopback_logins(faults: Faults) -> tuple[str, str]:
    """IMAP and POP3 logins of ivan with his real password, from the host over loopback."""
    password = (faults.site.parent / "secrets" / "accounts" / IVAN).read_text().strip()
    script = (
        "import imaplib, poplib, sys\n"
        "user, pw = sys.argv[1], sys.stdin.read()\n"
        "i = imaplib.IMAP4('127.0.0.1', 143)\n"
        "try:\n    print('IMAP', i.login(user, pw)[0])\n"
        "except imaplib.IMAP4.error as e:\n    print('IMAP', e.args[0].decode())\n"
        "p = poplib.POP3('127.0.0.1', 110, timeout=60)\n"
        "p.user(user)\n"
        "try:\n    print('POP3', p.pass_(pw).decode())\n"
        "except poplib.error_proto as e:\n    print('POP3', e.args[0].decode())\n")
    proc = faults.mail.exec(["python3", "-c", script, IVAN], input=password, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imap, pop = proc.stdout.strip().splitlines()
    return imap, pop


# -- daemons that stop ------------------------------------------------------------------

def test_slapd_stopped_defers_everything_and_recovery_delivers_what_was_queued(
        faults: Faults) -> None:
    # mail acknowledged while Dovecot is away waits in the queue ...
    faults.stop("dovecot")
    queued = faults.send(10)
    assert len(queued.acked) == 10, queued.refused
    faults.stop("slapd")
    faults.start("dovecot")
    # ... and meets the outage on a queue run (address resolution and Dovecot's user lookup)
    faults.sh("postqueue -f")
    time.sleep(8)
    assert faults.queued() == 10
    assert faults.copies(queued.run) == {}
    reasons = faults.sh("postqueue -p")
    print("[queued during the LDAP outage: " + "; ".join(sorted(
        {line.strip() for line in reasons.splitlines() if line.strip().startswith("(")})) + "]")
    # new mail for local users: a temporary refusal, nothing accepted, nothing bounced
    during = faults.send(10)
    assert during.acked == []
    # 4.3.5 since the locked-address tables come first (check_recipient_access: Postfix's
    # answer to an access table it cannot read), 4.3.0 from the address tables themselves
    assert all(a.startswith(("451 4.3.5", "451 4.3.0")) for a in during.refused.values()), \
        during.answers()
    imap, pop = loopback_logins(faults)
    print(f"[logins during the LDAP outage: {imap} | {pop}]")
    assert imap.startswith("IMAP [UNAVAILABLE] Temporary authentication failure"), imap
    assert pop.startswith("POP3 -ERR [SYS/TEMP] Temporary authentication failure"), pop
    assert faults.queued() == 10  # nothing bounced: no notice queued to the sender either
    # slapd returns: what waited arrives without anyone touching the queue
    started = time.monotonic()
    faults.start("slapd")
    no_loss(faults.wait_delivered(queued, timeout=90), "queued during the LDAP outage")
    print(f"[recovery after slapd's start: {time.monotonic() - started:.1f} s]")
    after = faults.send(4)
    assert len(after.acked) == 4, after.refused  # no cached lookup failure is answered
    no_loss(faults.wait_delivered(after), "sent after the LDAP outage")
    imap, pop = loopback_logins(faults)
    assert imap == "IMAP OK" and pop.startswith("POP3 +OK"), (imap, pop)


def test_dovecot_stopped_keeps_mail_queued_and_delivers_it_on_start(faults: Faults) -> None:
    faults.stop("dovecot")
    batch = faults.send(40)
    assert len(batch.acked) == 40, batch.refused
    time.sleep(3)
    assert faults.queued() == 40
    assert faults.copies(batch.run) == {}
    faults.start("dovecot")
    no_loss(faults.wait_delivered(batch, timeout=90), "queued while Dovecot was stopped")


# -- restarts during a run of mail ------------------------------------------------------

def restart_during_run(faults: Faults, unit: str, count: int, rate: float) -> Tally:
    """``count`` messages at ``rate`` a second; ``unit`` restarts after the first third."""
    seen: dict[str, float] = {}

    def restart() -> None:
        started = time.monotonic()
        faults.sh(f"systemctl restart {unit}")
        seen["restart"] = time.monotonic() - started

    since = time.time()
    # ten connections per run: the three 1,000-message runs of `make faults` together stay under
    # Postfix's 60 connections per client and minute (anvil), so they measure restarts, not
    # throttling (at 20 a connection the third run was refused 460 times: 421 4.7.0)
    batch = faults.send(count, rate=rate, at=count // 3, fault=restart,
                        per=max(20, count // 10))
    assert "restart" in seen, "the run ended before the restart"
    tally = faults.wait_delivered(batch, timeout=180)
    no_loss(tally, f"{unit} restarted after {count // 3} of {count} messages (restart "
                   f"{seen['restart']:.1f} s, {faults.deferred_since(since)} deliveries deferred)",
            faults)
    assert len(batch.acked) >= count // 2, batch.answers()
    return tally


def test_a_dovecot_restart_during_a_run_loses_nothing(faults: Faults) -> None:
    restart_during_run(faults, "dovecot", 200, rate=50)


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["slapd", "postfix", "dovecot"])
def test_a_restart_during_1000_messages_loses_nothing(faults: Faults, unit: str) -> None:
    restart_during_run(faults, unit, 1000, rate=100)


# -- applies that fail ------------------------------------------------------------------

TREES = "find /etc/postfix /etc/dovecot -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum"


def changed_site(faults: Faults, name: str, extra: str) -> Path:
    """The lab's site with ``extra`` appended, in a folder of its own beside it (same secrets,
    same site name, so the same lab)."""
    folder = faults.site.parent / name
    folder.mkdir(exist_ok=True)
    site = folder / "site.yml"
    site.write_text(faults.site.read_text(encoding="utf-8") + extra, encoding="utf-8")
    if not (folder / "secrets").exists():
        shutil.copytree(faults.site.parent / "secrets", folder / "secrets")
    return site


def everything_works(faults: Faults, name: str) -> None:
    assert faults.sh("systemctl is-active slapd postfix dovecot").split() == ["active"] * 3
    assert faults.try_sh("ls -d /etc/postfix.mailstack-stage /etc/dovecot.mailstack-stage"
                         ).returncode != 0, "a staging directory was left behind"
    batch = faults.send(6)
    assert len(batch.acked) == 6, batch.refused
    no_loss(faults.wait_delivered(batch, timeout=60), name)
    imap, pop = loopback_logins(faults)
    assert imap == "IMAP OK" and pop.startswith("POP3 +OK"), (imap, pop)


def test_a_configuration_dovecot_refuses_leaves_every_service_as_it_was(faults: Faults) -> None:
    """A rendered dovecot.conf that doveconf refuses (test_apply.py covers Postfix's checker and
    Dovecot's LDAP files): the staged check stops it, nothing live changes."""
    faults.ready()
    before = faults.sh(TREES)
    pids = faults.sh("systemctl show -p MainPID --value slapd postfix dovecot")
    build = faults.build / faults.state.site
    conf = "/etc/dovecot/dovecot.conf"
    broken = faults.site.parent / "broken-build"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(build, broken / faults.state.site, symlinks=True)
    build = broken / faults.state.site
    with (build / "mail" / conf.lstrip("/")).open("a") as fh:
        fh.write("bogus_setting = 1\n")
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["hosts"]["mail"]["files"][conf]["sha256"] = hashlib.sha256(
        (build / "mail" / conf.lstrip("/")).read_bytes()).hexdigest()
    (build / "manifest.json").write_text(json.dumps(manifest))
    lines: list[str] = []
    with pytest.raises(apply.ApplyFailed) as caught:
        apply.run_playbook(faults.state.inventory, build, {}, out=lines.append)
    message = str(caught.value)
    print(f"[refused configuration: {message.splitlines()[-1]}]")
    assert f"{conf} changed" in message
    assert "Unknown setting: bogus_setting" in message
    assert faults.sh(TREES) == before
    assert faults.sh("systemctl show -p MainPID --value slapd postfix dovecot") == pids
    everything_works(faults, "after the refused configuration")


def cut_ssh(faults: Faults) -> str:
    """Stop sshd and kill every SSH session on the host (by process id): the connection drops
    as a network failure would. Returns what was killed."""
    return faults.sh("systemctl stop ssh.service; "
                     "pids=$(ps -eo pid=,args= | awk '$2 ~ /^sshd:/ {print $1}'); "
                     "[ -z \"$pids\" ] || kill -9 $pids; echo $pids")


def test_ssh_dropped_mid_apply_leaves_a_whole_configuration_and_the_next_apply_completes(
        faults: Faults) -> None:
    """SSH cut while Postfix's configuration is being staged; the next apply (which also
    finds slapd stopped: apply starts the directory it needs) completes the change."""
    faults.ready()
    before = faults.sh("sha256sum /etc/postfix/main.cf")
    site = changed_site(faults, "warn-3h", "\npostfix:\n  main:\n    delay_warning_time: 3h\n")
    text = site.read_text(encoding="utf-8")
    site.write_text(text.replace("\naliases:\n", "\n  - mail: petr@krasnoyarsk.example.org\n"
                                 "    name: Petr Ivanov\n\naliases:\n", 1), encoding="utf-8")
    petr = site.parent / "secrets" / "accounts" / "petr@krasnoyarsk.example.org"
    petr.write_text("petr-initial-password\n")
    petr.chmod(0o600)
    cut: dict[str, str] = {}

    def watch(line: str) -> None:
        if not cut and "Copy the live directory to the staging directory" in line:
            cut["at"] = line.strip()
            cut["killed"] = cut_ssh(faults)

    with pytest.raises((apply.ApplyFailed, ToolError)) as caught:
        faults.apply(site, out=watch)
    message = str(caught.value)
    print(f"[SSH cut after: {cut.get('at')}; apply said: {message}]")
    assert cut, "the apply never reached Postfix's staging"
    assert message.endswith(apply.UNREACHABLE_HINT), message
    # the live configuration is whole: the old one, or (had the swap been reached) the new one
    main_cf = faults.sh("sha256sum /etc/postfix/main.cf")
    assert main_cf == before or "3h" in faults.sh("postconf -h delay_warning_time")
    assert faults.try_sh("postfix check").returncode == 0
    assert faults.sh("systemctl is-active postfix").strip() == "active"
    faults.stop("slapd")  # slapd down at the next apply's time
    faults.start("ssh.service")
    report = faults.apply(site)
    assert report.ok
    assert faults.sh("postconf -h delay_warning_time").strip() == "3h"
    # slapd started by the apply; petr (added by the cut apply, whose slapd part had run) works
    assert "mailstack.mail.slapd: Start slapd and enable it at boot" in report.hosts["mail"].changes
    assert faults.try_sh("doveadm auth test petr@krasnoyarsk.example.org "
                         "petr-initial-password").returncode == 0
    everything_works(faults, "after an apply cut off by a dropped SSH connection")
    # a connection lost right after a swap leaves the swap's note that the daemon has still to
    # pick its tree up (planted here: that window is too short to hit): the next apply, with
    # no file to change, reloads both daemons and forgets the notes
    pending = "/var/lib/mailstack/postfix.reload-pending /var/lib/mailstack/dovecot.reload-pending"
    assert faults.try_sh(f"ls {pending}").returncode != 0
    faults.sh(f"for f in {pending}; do echo reload > $f; done")
    again = faults.apply(site).hosts["mail"].changes
    assert "mailstack.mail.postfix: Reload Postfix" in again, again
    assert "mailstack.mail.dovecot: Reload Dovecot" in again, again
    assert faults.try_sh(f"ls {pending}").returncode != 0


def test_a_full_queue_file_system_defers_mail_and_apply_says_so(faults: Faults) -> None:
    """A small file system over Postfix's queue (tmpfs, 128 MiB), then filled: Postfix refuses
    new mail with 452 4.3.1, what it had queued is still delivered, apply stops before
    touching Postfix and says why; with room again the next apply completes."""
    faults.ready()
    faults.sh(f"systemctl stop postfix && tar -C {QUEUE} -cf /root/queue.tar . ")
    mount = subprocess.run(["podman", "exec", "--privileged", faults.mail.name, "mount", "-t",
                            "tmpfs", "-o", "size=128m,mode=755", "tmpfs", QUEUE],
                           capture_output=True, text=True, timeout=60, check=False)
    assert mount.returncode == 0, mount.stderr
    faults.sh(f"tar -C {QUEUE} -xpf /root/queue.tar && systemctl start postfix")
    faults.stop("dovecot")
    waiting = faults.send(5)
    assert len(waiting.acked) == 5, waiting.refused
    faults.sh(f"dd if=/dev/zero of={QUEUE}/filler bs=1M count=120 2>/dev/null; df -h {QUEUE}")
    refused = faults.send(5)
    print(f"[full queue file system: {refused.answers()}]")
    assert refused.acked == []
    assert all(a.startswith("452 4.3.1 Insufficient system storage")
               for a in refused.refused.values()), refused.answers()
    faults.start("dovecot")
    no_loss(faults.wait_delivered(waiting, timeout=60), "queued before the disk filled up")
    before = faults.sh(TREES)
    site = changed_site(faults, "warn-5h", "\npostfix:\n  main:\n    delay_warning_time: 5h\n")
    with pytest.raises(apply.ApplyFailed) as caught:
        faults.apply(site)
    message = str(caught.value)
    print(f"[apply on a full queue: {message.splitlines()[-1]}]")
    assert f"Postfix's queue file system ({QUEUE}) has" in message
    assert "452 4.3.1 Insufficient system storage" in message
    assert faults.sh(TREES) == before
    faults.sh(f"rm {QUEUE}/filler")
    report = faults.apply(site)
    assert report.ok
    assert faults.sh("postconf -h delay_warning_time").strip() == "5h"
    everything_works(faults, "after the queue had room again")
