"""Brute force in the lab: fail2ban bans an address that keeps guessing, and only that one.

One lab for the module: the example site (its own site name, the site's default ``bans``)
applied to a bare host (fail2ban, python3-systemd and nftables come from the lab's local apt
repository of the manifest's packages, as on a real server). An extra container on the lab
network (``attacker``, .101) guesses passwords; the lab's client (.100, where verify probes
from) keeps logging in. A ban is proven with real connection attempts (refused at the host's
nftables), a working client with real logins. Then fail2ban is broken the ways an admin could
break it, and the host checks FAIL.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailstack import apply, lab, secrets, verify
from mailstack.container import Container, commit, remove_image
from mailstack.plan import fail2ban, layout
from mailstack.site.load import load_site
from tests.conftest import LabSite, example_lab_site, live

pytestmark = live(ssh=True, ansible=True, bare=True)

ATTACKER_OCTET = 101
IMAP_PORTS = (layout.IMAP_PORT, layout.IMAPS_PORT, layout.POP3_PORT, layout.POP3S_PORT)
SMTP_PORTS = (layout.SMTP_PORT, layout.SUBMISSIONS_PORT, layout.SUBMISSION_PORT)
JAILS = "host: fail2ban runs the sites jails"
JOURNALS = "host: each jail reads the journal its daemon logs to"
NFT = "host: nftables answers so that bans take effect"

# Runs in a lab container (stdlib only): N logins with wrong passwords, 5 at a time, IMAP (993)
# or SMTP AUTH PLAIN (587 after STARTTLS); one answer per attempt.
GUESS = r"""
import imaplib, json, smtplib, ssl, sys
from concurrent.futures import ThreadPoolExecutor
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
def imap(i):
    c = imaplib.IMAP4_SSL(job["host"], 993, ssl_context=ctx, timeout=60)
    try:
        c.login(job["user"], job["password"] or f"guess-{i}")
        return "accepted"
    except imaplib.IMAP4.error as e:
        return f"refused: {e}"
    finally:
        c.shutdown()
def smtp(i):
    with smtplib.SMTP(job["host"], 587, timeout=60) as s:
        s.ehlo("guess.lab.test")
        s.starttls(context=ctx)
        s.ehlo("guess.lab.test")
        s.user, s.password = job["user"], job["password"] or f"guess-{i}"
        try:
            s.auth("PLAIN", s.auth_plain)
            return "accepted"
        except smtplib.SMTPAuthenticationError as e:
            return f"refused: {e.smtp_code}"
def one(i):
    try:
        return {"imap": imap, "smtp": smtp}[job["kind"]](i)
    except OSError as e:
        return f"{type(e).__name__}: {e}"
with ThreadPoolExecutor(5) as pool:
    print(json.dumps(list(pool.map(one, range(job["n"])))))
"""

# Runs in a lab container: a TCP connection to each port; what happened.
WRONG = {"imap": "refused: b'[AUTHENTICATIONFAILED] Authentication failed.'",
         "smtp": "refused: 535"}
COUNTED = set(WRONG.values())
TEMPORARY = {"refused: b'[UNAVAILABLE] Temporary authentication failure. [", "refused: 454"}

CONNECT = r"""
import json, socket, sys
job = json.loads(sys.argv[1])
out = {}
for port in job["ports"]:
    try:
        socket.create_connection((job["host"], port), timeout=5).close()
        out[port] = "connected"
    except ConnectionRefusedError:
        out[port] = "refused"
    except OSError as e:
        out[port] = type(e).__name__
print(json.dumps(out))
"""


class Bans(LabSite):
    def __init__(self, site, build, root) -> None:
        super().__init__(site, build)
        model = load_site(site)
        store = secrets.SecretStore(root / "secrets")
        self.user = model.accounts[0].mail
        self.password = store.read(layout.account_secret(model.accounts[0]))
        self.hostname = model.hosts["mail"].hostname
        self.max_failures = model.bans.max_failures
        self.client = Container(self.state.client.name)
        self.attacker_ip = str(ipaddress.ip_network(self.state.subnet)[ATTACKER_OCTET])
        self.attacker = Container(f"{self.state.network}-attacker")

    def run(self, where: Container, script: str, **job: object) -> object:
        proc = where.exec(["python3", "-c", script, json.dumps(job)], timeout=180)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def guess(self, where: Container, kind: str, n: int, password: str = "") -> list[str]:
        return self.run(where, GUESS, host=self.hostname, user=self.user, password=password,
                        kind=kind, n=n)  # type: ignore[return-value]

    def burst(self, kind: str) -> list[str]:
        """The attacker's wrong passwords until the daemon refused max_failures of them as
        wrong (what fail2ban counts). Seen once per lab run: Postfix's first AUTH on a reused
        smtpd process, right after the same address' IMAP burst, answered 454 ("Connection lost
        to authentication server"): no password was checked, and fail2ban rightly does not
        count it; such an answer is a refusal too, and the guesser tries again."""
        answers: list[str] = []
        while len(answers) < 3 * self.max_failures:
            counted = sum(a in COUNTED for a in answers)
            if counted >= self.max_failures:
                break
            answers += self.guess(self.attacker, kind, self.max_failures - counted)
        return answers

    def connect(self, where: Container, ports: tuple[int, ...]) -> dict[str, str]:
        return self.run(where, CONNECT, host=self.hostname,
                        ports=list(ports))  # type: ignore[return-value]

    def failed(self) -> dict[str, int]:
        """fail2ban's count of failures so far, per jail."""
        out = {}
        for jail in fail2ban.jail_names(load_site(self.site), "mail"):
            status = self.sh(f"fail2ban-client status {jail}")
            out[jail] = int(re.search(r"Total failed:\s*(\d+)", status).group(1))
        return out

    def banned(self, jail: str) -> list[str]:
        status = self.sh(f"fail2ban-client status {jail}")
        return re.search(r"Banned IP list:\s*(.*)", status).group(1).split()

    def host_checks(self) -> dict[str, verify.Check]:
        # "host" names no probe part: only the host checks run
        report = verify.verify(self.site, lab=True, build_dir=self.build, parts=["host"])
        return {c.name: c for c in report.checks}

    def refused_soon(self, ports: tuple[int, ...], within: float = 30.0) -> dict[str, str]:
        """What the attacker's connections get, once all are refused or ``within`` ran out."""
        deadline = time.monotonic() + within
        while True:
            seen = self.connect(self.attacker, ports)
            if set(seen.values()) == {"refused"} or time.monotonic() > deadline:
                return seen
            time.sleep(1)

    def log_of(self, ip: str) -> str:
        """The host's journal lines about ``ip`` in the last minutes (for a failure's message)."""
        return self.sh(f"journalctl --since -5min --no-pager | grep -F '{ip}' | tail -25 || true")


@pytest.fixture(scope="module")
def bans_lab(tmp_path_factory) -> Bans:
    root = tmp_path_factory.mktemp("bans")
    site, build = example_lab_site(root, "bans")
    attacker = None
    try:
        lab.up(site, build_dir=build, start="bare")
        report = apply.apply(site, inventory=lab.state(site, build_dir=build).inventory,
                             build_dir=build, out=lambda line: None)
        assert report.ok, report.lines()
        world = Bans(site, build, root)
        attacker = Container.start(world.attacker.name, hostname="attacker.lab.test",
                                   network=world.state.network, ip=world.attacker_ip)
        yield world
    finally:
        if attacker is not None:
            attacker.remove()
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


def test_a_full_verify_passes_and_costs_its_client_few_failures(bans_lab: Bans) -> None:
    """The figures behind the default bans (10 failures within 10 minutes): one full verify
    run is counted 1 failure by postfix-sasl (its wrong password on 587) and 2 by dovecot (the
    plaintext logins refused before STARTTLS on 143 and before STLS on 110), none by sshd (the
    example's slapd listens on ldapi only: no slapd jail). So the suite's client can run verify
    4 times within the window with room to spare."""
    before = bans_lab.failed()
    started = time.monotonic()
    report = verify.verify(bans_lab.site, lab=True, build_dir=bans_lab.build)
    took = time.monotonic() - started
    assert {c.name: c.detail for c in report.checks if not c.ok} == {}
    assert {JAILS, JOURNALS, NFT} <= {c.name for c in report.checks}
    cost = {jail: n - before[jail] for jail, n in bans_lab.failed().items()}
    print(f"\n[one full verify: {took:.0f} s, failures counted per jail: {cost}]")
    assert cost == {"dovecot": 2, "postfix-sasl": 1, "sshd": 0}
    assert 4 * max(cost.values()) < bans_lab.max_failures
    assert bans_lab.banned("dovecot") == bans_lab.banned("postfix-sasl") == []


def test_a_burst_of_wrong_imap_passwords_ends_refused_while_another_client_logs_in(
        bans_lab: Bans) -> None:
    assert set(bans_lab.connect(bans_lab.attacker, IMAP_PORTS).values()) == {"connected"}
    started = time.monotonic()
    answers = bans_lab.burst("imap")
    assert answers.count(WRONG["imap"]) == bans_lab.max_failures, \
        (answers, bans_lab.log_of(bans_lab.attacker_ip))
    assert all(a == WRONG["imap"] or a.startswith(tuple(TEMPORARY)) for a in answers), answers
    seen = bans_lab.refused_soon(IMAP_PORTS)
    print(f"\n[IMAP: {len(answers)} wrong passwords, 5 at a time, refused after "
          f"{time.monotonic() - started:.0f} s]")
    # every IMAP and POP3 port refuses the guesser at the firewall...
    assert seen == {str(p): "refused" for p in IMAP_PORTS}, \
        (seen, bans_lab.log_of(bans_lab.attacker_ip))
    assert bans_lab.banned("dovecot") == [bans_lab.attacker_ip]
    # ...and only those: its SMTP is another jail's business
    assert set(bans_lab.connect(bans_lab.attacker, SMTP_PORTS).values()) == {"connected"}
    # the lab's client, with the right password, still logs in
    assert bans_lab.guess(bans_lab.client, "imap", 1, bans_lab.password) == ["accepted"]
    assert bans_lab.guess(bans_lab.client, "smtp", 1, bans_lab.password) == ["accepted"]


def test_a_burst_of_wrong_smtp_passwords_ends_refused(bans_lab: Bans) -> None:
    """Postfix's daemons log from postfix@-.service: the jail must read that journal (Debian's
    filter alone reads postfix.service and would never ban anyone)."""
    started = time.monotonic()
    answers = bans_lab.burst("smtp")
    assert answers.count(WRONG["smtp"]) == bans_lab.max_failures, \
        (answers, bans_lab.log_of(bans_lab.attacker_ip))
    assert all(a == WRONG["smtp"] or a.startswith(tuple(TEMPORARY)) for a in answers), answers
    seen = bans_lab.refused_soon(SMTP_PORTS)
    temporary = answers.count("refused: 454")
    print(f"\n[SMTP AUTH: {len(answers)} wrong passwords, 5 at a time ({temporary} answered "
          f"454), refused after {time.monotonic() - started:.0f} s]")
    assert seen == {str(p): "refused" for p in SMTP_PORTS}, \
        (seen, bans_lab.log_of(bans_lab.attacker_ip))
    assert bans_lab.banned("postfix-sasl") == [bans_lab.attacker_ip]
    assert bans_lab.guess(bans_lab.client, "smtp", 1, bans_lab.password) == ["accepted"]


def test_unbanning_lets_the_address_back_in(bans_lab: Bans) -> None:
    bans_lab.sh("fail2ban-client unban --all")
    assert bans_lab.banned("dovecot") == bans_lab.banned("postfix-sasl") == []
    seen = bans_lab.connect(bans_lab.attacker, IMAP_PORTS + SMTP_PORTS)
    assert set(seen.values()) == {"connected"}, seen
    assert bans_lab.attacker_ip not in bans_lab.sh("nft list ruleset")


def test_a_jail_switched_off_or_reading_the_wrong_journal_fails_the_host_checks(
        bans_lab: Bans) -> None:
    """An admin's override that switches the dovecot jail off, and Debian's journalmatch for
    Postfix (postfix.service), which Postfix's daemons do not log from."""
    bans_lab.sh("printf '[dovecot]\\nenabled = false\\n[postfix-sasl]\\njournalmatch = "
                "_SYSTEMD_UNIT=postfix.service\\n' > /etc/fail2ban/jail.d/zz-test.local"
                " && fail2ban-client reload")
    try:
        checks = bans_lab.host_checks()
    finally:
        bans_lab.sh("rm /etc/fail2ban/jail.d/zz-test.local && fail2ban-client reload")
    assert "fail2ban runs the jails ['postfix-sasl', 'sshd'], not ['dovecot', " \
           "'postfix-sasl', 'sshd']" in checks[JAILS].detail
    assert "jail postfix-sasl does not read the journal of postfix@-.service" in \
        checks[JOURNALS].detail
    assert checks[NFT].ok
    assert "Jail list:\tdovecot, postfix-sasl, sshd" in bans_lab.sh("fail2ban-client status")


def test_fail2ban_stopped_fails_the_host_checks(bans_lab: Bans) -> None:
    bans_lab.sh("systemctl stop fail2ban")
    try:
        checks = bans_lab.host_checks()
    finally:
        bans_lab.sh("systemctl start fail2ban")
    assert "not running: fail2ban" in checks["host: services are running"].detail
    assert "fail2ban-client status: exit 255: ERROR   Failed to access socket path" in \
        checks[JAILS].detail
    assert not checks[JOURNALS].ok


def test_a_host_where_nft_is_not_permitted_fails_the_nftables_check(bans_lab: Bans) -> None:
    """The applied host as the lab's hosts were before fail2ban, without NET_ADMIN: nft answers
    "Operation not permitted", fail2ban logs its bans and nothing is refused."""
    manifest = Path(bans_lab.build) / load_site(bans_lab.site).site / "manifest.json"
    image = f"localhost/mailstack-snap:{bans_lab.state.network}-no-net-admin"
    commit(bans_lab.mail.name, image)
    try:
        with Container.throwaway("mailstack-bans-no-net-admin", image=image) as copy:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", str(verify.TESTINFRA / "test_host.py"), "-q",
                 "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir",
                 str(verify.TESTINFRA), "--tb=line", "-k", "nftables",
                 f"--hosts=podman://{copy.name}"],
                capture_output=True, text=True, timeout=300, check=False,
                env={**os.environ, "MAILSTACK_MANIFEST": str(manifest), "MAILSTACK_HOST": "mail"})
    finally:
        remove_image(image)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "nft cannot read the firewall, so no ban takes effect: Operation not permitted" in \
        proc.stdout, proc.stdout
