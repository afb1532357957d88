"""A head office and a branch (the compact version of inventories/head-office in `make test`).

One lab for the module: the head-office example without its second branch (omsk; Olga lives
at the head office instead), under its own site name, on its --internal network: the head
office ``hq`` (directory provider, relay, mailboxes) and the branch ``tomsk`` (a read-only
replica, mailboxes), the outside smarthost's stand-in and the client. Applied once by the
fixture (the whole fleet in one apply); the cases run in order, each leaving the fleet as the
site says. Mail is counted by Message-ID in the Maildirs of each host; the path a message took
is read from its Received headers. `make test-multisite` adds the second branch and the
faults (tests/live/test_multisite_faults.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailstack import apply, lab, secrets, users, verify
from mailstack.container import Container
from mailstack.plan import layout
from mailstack.site.load import load_site
from tests.conftest import ROOT, live

pytestmark = live(ssh=True, ansible=True)

HEAD_OFFICE = ROOT / "inventories" / "head-office" / "site.yml"
DOMAIN = "taiga.example.org"
BASE = "dc=taiga,dc=example,dc=org"
HQ_NAME, TOMSK_NAME = "mail.hq.taiga.example.org", "mail.tomsk.taiga.example.org"
DIRECTOR, IVAN, MARIA = (f"{u}@{DOMAIN}" for u in ("director", "ivan", "maria"))


def fleet_text(prefix: str, *, compact: bool) -> str:
    """The example under a unique site name, the lab's addresses never banned (the tests log
    in from the client on purpose); ``compact``: without its second branch (omsk)."""
    text = HEAD_OFFICE.read_text(encoding="utf-8")
    if compact:
        omsk = ("  omsk:\n    hostname: mail.omsk.taiga.example.org\n"
                "    roles: [ldap-replica, mta, imap]\n")
        assert omsk in text and "    mailhost: omsk\n" in text
        text = text.replace(omsk, "").replace("    mailhost: omsk\n", "    mailhost: hq\n")
    text = text.replace("site: taiga", f"site: {prefix}{uuid.uuid4().hex[:6]}", 1)
    return text + "\nbans:\n  never: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n"


@contextlib.contextmanager
def lab_fleet(root: Path, text: str) -> Iterator[Fleet]:
    """The site ``text`` in its lab, applied once (the whole fleet in one apply)."""
    site = root / "site.yml"
    site.write_text(text, encoding="utf-8")
    build = root / "build"
    lab.ensure_outside_secrets(site, build_dir=build)
    secrets.generate(load_site(site), root / "secrets")
    try:
        started = time.monotonic()
        lab.up(site, build_dir=build)
        up = time.monotonic() - started
        world = Fleet(site, build, root)
        first = world.apply()
        print(f"\n[fleet: lab up {up:.0f} s, first apply of {len(first.hosts)} hosts "
              f"{first.seconds:.0f} s]")
        yield world
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


class Fleet:
    """The lab of a head office and its branches, applied."""

    def __init__(self, site: Path, build: Path, root: Path) -> None:
        self.site, self.build, self.root = site, build, root
        self.state = lab.state(site, build_dir=build)
        self.model = load_site(site)
        store = secrets.SecretStore(root / "secrets")
        self.password = {a.mail: store.read(layout.account_secret(a)) for a in self.model.accounts}
        self.client = Container(self.state.client.name)

    def box(self, host: str) -> Container:
        return Container(self.state.host(host).name)

    def sh(self, host: str, script: str, timeout: int = 120) -> str:
        proc = self.box(host).exec(["sh", "-c", script], timeout=timeout)
        assert proc.returncode == 0, f"{host}: {script}: {proc.stderr}"
        return proc.stdout

    def apply(self, limit: str | None = None) -> apply.ApplyReport:
        report = apply.apply(self.site, inventory=self.state.inventory, build_dir=self.build,
                             limit=limit, out=lambda line: None)
        assert report.ok, report.lines()
        return report

    def send(self, server: str, to: str, sender: str, *, port: int = 25,
             login: str | None = None) -> str:
        """One message from the client; its Message-ID once the server took it (250)."""
        mid = f"{uuid.uuid4().hex}@lab.test"
        argv = ["swaks", "--server", server, "--port", str(port), "--to", to, "--from", sender,
                "--header", f"Message-ID: <{mid}>", "--timeout", "30"]
        if login:
            argv += ["-tls", "--auth-user", login, "--auth-password", self.password[login]]
        proc = self.client.exec(argv, timeout=90)
        assert proc.returncode == 0, proc.stdout[-600:] + proc.stderr
        return mid

    def copies(self, host: str, user: str, mid: str) -> list[str]:
        """The messages with ``mid`` in ``user``'s Maildir on ``host`` (their text)."""
        maildir = f"/var/vmail/{DOMAIN}/{user.split('@')[0]}/Maildir"
        # messages only: Dovecot's index cache holds headers too
        out = self.sh(host, f"grep -rlsF 'Message-ID: <{mid}>' {maildir}/new {maildir}/cur "
                            "|| true")
        return [self.sh(host, f"cat {path}") for path in out.split()]

    def imap_login(self, host: str, user: str) -> str:
        """An IMAP login from the client to ``host`` (993): "ok" or the server's answer."""
        script = ("import imaplib, ssl, sys, json\n"
                  "job = json.loads(sys.argv[1])\n"
                  "try:\n"
                  "    c = imaplib.IMAP4_SSL(job['host'], 993, ssl_context="
                  "ssl._create_unverified_context(), timeout=20)\n"
                  "    c.login(job['user'], job['password']); c.logout(); print('ok')\n"
                  "except Exception as e:\n"
                  "    print(type(e).__name__, e)\n")
        job = {"host": self.state.host(host).hostname, "user": user,
               "password": self.password[user]}
        proc = self.client.exec(["python3", "-c", script, json.dumps(job)], timeout=60)
        return proc.stdout.strip()


def wait_for(what: Callable[[], object], seconds: float, step: float = 0.2) -> object:
    deadline = time.monotonic() + seconds
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)


def hops(message: str) -> list[str]:
    """The hosts that took the message, first to last (its Received headers' "by"; a host's
    own LMTP hand-over to Dovecot counts once with its Postfix)."""
    headers = message.split("\n\n", 1)[0].replace("\n\t", " ").replace("\n ", " ")
    by = [m.group(1) for m in re.finditer(r"^Received: .*?\bby (\S+)", headers, re.M)][::-1]
    return [host for i, host in enumerate(by) if i == 0 or by[i - 1] != host]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    with lab_fleet(tmp_path_factory.mktemp("fleet"), fleet_text("fleet", compact=True)) as world:
        yield world


def test_a_second_apply_of_the_fleet_changes_nothing(fleet: Fleet) -> None:
    report = fleet.apply()
    assert set(report.hosts) == {"hq", "tomsk"}
    assert report.changed == 0, report.lines()
    print(f"\n[second apply of the fleet: {report.seconds:.1f} s]")


def test_the_replica_holds_the_providers_tree_with_its_password_hashes(fleet: Fleet) -> None:
    def context(host: str) -> str:
        return fleet.sh(host, f"ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -s base -b {BASE} "
                              "contextCSN | grep ^contextCSN")

    assert wait_for(lambda: context("tomsk") == context("hq"), 10), \
        (context("hq"), context("tomsk"))
    hashes = fleet.sh("tomsk", f"ldapsearch -Q -LLL -o ldif-wrap=no -Y EXTERNAL -H ldapi:/// "
                               f"-b ou=people,{BASE} '(mail=*)' userPassword")
    assert hashes.count("userPassword:: ") == len(fleet.model.accounts), hashes
    # how long a change takes to reach the replica: a root modify at the provider, seen at
    # the branch (ou=people's description: an attribute the site does not own)
    delays = []
    for i in range(5):
        mark = f"replication probe {i} {uuid.uuid4().hex[:8]}"
        ldif = f"dn: ou=people,{BASE}\nchangetype: modify\nreplace: description\n" \
               f"description: {mark}\n"
        fleet.box("hq").exec(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"],
                             input=ldif, check=True)
        written = time.monotonic()
        assert wait_for(lambda mark=mark: mark in fleet.sh(
            "tomsk", f"ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -s base -b ou=people,{BASE} "
                     "description"), 10, 0.01)
        delays.append(time.monotonic() - written)
    fleet.box("hq").exec(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"], check=True,
                         input=f"dn: ou=people,{BASE}\nchangetype: modify\n"
                               "delete: description\n")
    print(f"\n[replication delay, provider to branch (5 changes, each polled through podman "
          f"exec, ~0.1 s a poll): {min(delays):.2f}-{max(delays):.2f} s]")
    # the replication settings are in cn=config, where a missing index is seen (not the logs)
    for host in ("hq", "tomsk"):
        indices = fleet.sh(host, "ldapsearch -Q -LLL -o ldif-wrap=no -Y EXTERNAL -H ldapi:/// "
                                 "-b olcDatabase={1}mdb,cn=config -s base olcDbIndex")
        assert "olcDbIndex: entryCSN eq" in indices and "olcDbIndex: entryUUID eq" in indices
    limits = fleet.sh("hq", "ldapsearch -Q -LLL -o ldif-wrap=no -Y EXTERNAL -H ldapi:/// "
                            "-b olcDatabase={1}mdb,cn=config -s base olcLimits")
    assert f'dn.exact="cn=replicator,ou=applications,{BASE}" size=unlimited' in limits


def test_verify_sees_a_replica_that_lags(fleet: Fleet) -> None:
    """verify's replica check passes, and fails while the replica's slapd is stopped."""
    targets = {h.key: verify.Target(h.key, h.hostname, h.ip, "root", str(fleet.state.key))
               for h in fleet.state.hosts}
    (check,) = verify.replica_checks(fleet.model, targets)
    assert check.ok and check.host == "tomsk", check
    fleet.sh("tomsk", "systemctl stop slapd")
    try:
        (check,) = verify.replica_checks(fleet.model, targets, seconds=2)
        assert not check.ok and "the replica at nothing" in check.detail, check
    finally:
        fleet.sh("tomsk", "systemctl start slapd")
    (check,) = verify.replica_checks(fleet.model, targets)
    assert check.ok, check


def test_each_host_logs_in_only_the_accounts_homed_there(fleet: Fleet) -> None:
    assert fleet.imap_login("tomsk", IVAN) == "ok"
    assert fleet.imap_login("hq", DIRECTOR) == "ok"
    assert "AUTHENTICATIONFAILED" in fleet.imap_login("hq", IVAN)
    assert "AUTHENTICATIONFAILED" in fleet.imap_login("tomsk", DIRECTOR)


def test_an_account_added_at_the_head_office_logs_in_at_its_branch(fleet: Fleet) -> None:
    pavel = f"pavel@{DOMAIN}"
    password = "Zx9-a-long-password"
    where = users.Where(lab=True, build_dir=str(fleet.build))
    dn = f"mail={pavel},ou=people,{BASE}"

    def replicated() -> bool:
        out = fleet.sh("tomsk", f"ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -s base -b {dn} "
                                "userPassword 2>/dev/null || true")
        return "userPassword" in out and "unusable-until-set" not in out

    started = time.monotonic()
    users.add(fleet.site, pavel, "Pavel Ivanov", lambda: password, mailhost="tomsk",
              where=where)
    added = time.monotonic()
    try:
        fleet.password[pavel] = password
        assert wait_for(replicated, 15, 0.02)
        print(f"\n[user add took {added - started:.2f} s; its entry and password were at the "
              f"branch's replica {time.monotonic() - added:.2f} s after it returned]")
        assert fleet.imap_login("tomsk", pavel) == "ok"
        assert "AUTHENTICATIONFAILED" in fleet.imap_login("hq", pavel)
    finally:
        users.remove(fleet.site, pavel, prune=True, where=where)
    assert wait_for(lambda: "AUTHENTICATIONFAILED" in fleet.imap_login("tomsk", pavel), 15)


def test_a_password_change_sent_to_a_replica_is_referred_to_the_provider(fleet: Fleet) -> None:
    dn = f"mail={IVAN},ou=people,{BASE}"
    proc = fleet.box("hq").exec(
        ["ldappasswd", "-H", f"ldap://{TOMSK_NAME}", "-ZZ", "-x", "-D", dn,
         "-w", fleet.password[IVAN], "-a", fleet.password[IVAN], "-s", "Zx9-never-set-here"],
        env={"LDAPTLS_CACERT": layout.CA_CERT}, timeout=60)
    # ldappasswd prints the result and exits 1
    assert proc.returncode != 0 and "Result: Referral (10)" in proc.stdout, \
        proc.stdout + proc.stderr
    assert f"Referral: ldap://{HQ_NAME}" in proc.stdout
    assert fleet.imap_login("tomsk", IVAN) == "ok"


def test_mail_between_the_hosts_travels_through_the_head_office(fleet: Fleet) -> None:
    # from the outside at the head office, to a branch's account
    mid = fleet.send(HQ_NAME, IVAN, "partner@outside.example")
    got = wait_for(lambda: fleet.copies("tomsk", IVAN, mid), 30)
    assert len(got) == 1 and hops(got[0]) == [HQ_NAME, TOMSK_NAME], got
    # from the outside at the branch, to the head office's account: branch -> relay -> home
    mid = fleet.send(TOMSK_NAME, DIRECTOR, "partner@outside.example")
    got = wait_for(lambda: fleet.copies("hq", DIRECTOR, mid), 30)
    assert len(got) == 1 and hops(got[0]) == [TOMSK_NAME, HQ_NAME], got
    assert fleet.copies("tomsk", DIRECTOR, mid) == []
    # a branch's user sends (submission) to the head office and to the outside: the branch
    # hands both to the relay, whose port 25 takes the site's own sender from it (its key)
    mid = fleet.send(TOMSK_NAME, DIRECTOR, IVAN, port=587, login=IVAN)
    got = wait_for(lambda: fleet.copies("hq", DIRECTOR, mid), 30)
    assert len(got) == 1 and hops(got[0]) == [TOMSK_NAME, HQ_NAME], got
    # the site's own sender from anyone else is refused at port 25, as before
    proc = fleet.client.exec(["swaks", "--server", HQ_NAME, "--to", DIRECTOR, "--from", IVAN],
                             timeout=60)
    assert "this sender belongs to the site" in proc.stdout, proc.stdout[-400:]


def test_a_branch_that_would_deliver_an_outside_account_locally_fails_the_check(
        fleet: Fleet) -> None:
    """The broken variant: the branch without the transport the directory gives. The check
    above (one copy at its home, through the relay) then fails; `apply --limit tomsk` mends
    the branch and touches nothing else."""
    def path_checks() -> dict[str, bool]:
        report = verify.verify(fleet.site, lab=True, build_dir=fleet.build, parts=["path"],
                               host_checks=False)
        return {c.name: c.ok for c in report.checks}

    good = path_checks()
    assert len(good) == 4 and all(good.values()), good
    fleet.sh("tomsk", "postconf -e transport_maps= && postfix reload")
    try:
        mid = fleet.send(TOMSK_NAME, DIRECTOR, "partner@outside.example")
        assert not wait_for(lambda: fleet.copies("hq", DIRECTOR, mid), 8), \
            "delivered at its home without the transport"
        bounced = fleet.sh("tomsk", "journalctl -u postfix@- --no-pager -n 50 -o cat")
        assert f"to=<{DIRECTOR}>, relay={TOMSK_NAME}[private/dovecot-lmtp]" in bounced
        # verify's path check fails on it too
        broken = path_checks()
        assert [name for name, ok in broken.items() if not ok] == [
            f"{DIRECTOR}: the message handed to {TOMSK_NAME} arrives at {HQ_NAME} once, "
            f"through {TOMSK_NAME} -> {HQ_NAME}"], broken
    finally:
        report = fleet.apply(limit="tomsk")
    assert set(report.hosts) == {"tomsk"} and report.hosts["tomsk"].changed > 0
    mid = fleet.send(TOMSK_NAME, DIRECTOR, "partner@outside.example")
    assert len(wait_for(lambda: fleet.copies("hq", DIRECTOR, mid), 30)) == 1


def test_the_branch_keeps_working_while_the_head_office_is_down(fleet: Fleet) -> None:
    hq = fleet.state.host("hq").name
    subprocess.run(["podman", "pause", hq], check=True, capture_output=True)
    try:
        # its users log in, send and receive among themselves
        assert fleet.imap_login("tomsk", IVAN) == "ok"
        local = fleet.send(TOMSK_NAME, MARIA, IVAN, port=587, login=IVAN)
        assert len(wait_for(lambda: fleet.copies("tomsk", MARIA, local), 30)) == 1
        # mail for the head office waits in the branch's queue
        waiting = fleet.send(TOMSK_NAME, DIRECTOR, IVAN, port=587, login=IVAN)
        queue = wait_for(lambda: "Deferred" in fleet.sh("tomsk", "postqueue -j || true")
                         or fleet.sh("tomsk", "postqueue -j"), 10)
        assert queue, "the message for the head office is not in the branch's queue"
    finally:
        subprocess.run(["podman", "unpause", hq], check=True, capture_output=True)
    fleet.sh("tomsk", "postqueue -f")
    got = wait_for(lambda: fleet.copies("hq", DIRECTOR, waiting), 90, 1)
    assert len(got) == 1, got
    time.sleep(2)
    assert len(fleet.copies("hq", DIRECTOR, waiting)) == 1
