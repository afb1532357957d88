"""Live tests of issue 10's remote-mailbox faults and certificate renewal, on one lab.

The example site (its own name), with Postfix's message_size_limit at 300,000 bytes so the
remote mailboxes' limit is 283,616 (less fetch.SIZE_MARGIN), and a host certificate that
expires in 10 days, is brought up (`lab up`, the prepared image) and applied once. Then:
* an oversized message at the lab's provider stays there, is never retrieved (the provider's
  Dovecot counts what each session retrieved), and is reported once: a warning in the unit's
  journal and one notice in the local account; a message under the limit arrives;
* a run that fails (a wrong password at the provider) leaves the unit failed and writes one
  error line through OnFailure=; a hung run (the provider's Dovecot stopped) is ended by its
  start timeout and reported the same way;
* `check` warns about the certificate, `mailstack secrets --renew` renews it with the same key,
  and after apply IMAPS, POP3S, SMTPS and STARTTLS on 25 and 587 present the new certificate.
Probes run in the lab's client; nothing leaves the lab.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailstack import certs, core, lab, verify
from mailstack.cli import main
from mailstack.container import Container
from mailstack.plan import fetch as fetch_plan
from mailstack.site.load import load_site
from tests.conftest import LabSite, example_lab_site, live
from tests.unit.test_certs import reissue

pytestmark = live(ssh=True, ansible=True)

SHOP, OLGA = "shop@provider.example", "olga@provider.example"
IVAN, OLGA_LOCAL = "ivan@krasnoyarsk.example.org", "olga@krasnoyarsk.example.org"
LIMIT = 300000 - fetch_plan.SIZE_MARGIN
NOTICE = "A message too large for this server waits at"
DER = Encoding.DER

# Runs in the client as `python3 /tmp/certs.py JSON`: the DER certificate each TLS port presents
# (verified against the site CA for the host's name), hex, as JSON.
CERT_PROBE = r'''
import json, smtplib, socket, ssl, sys
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile="/tmp/site-ca.crt")
out = {}
for port, how in a["ports"]:
    try:
        if how == "starttls":
            c = smtplib.SMTP(a["ip"], port, timeout=20)
            c._host = a["name"]  # the name the certificate is checked for
            c.starttls(context=ctx)
            sock = c.sock
        else:  # TLS from the first byte: the handshake is all we need
            sock = ctx.wrap_socket(socket.create_connection((a["ip"], port), timeout=20),
                                   server_hostname=a["name"])
        out[str(port)] = sock.getpeercert(binary_form=True).hex()
        sock.close()
    except Exception as err:
        out[str(port)] = f"error: {type(err).__name__}: {err}"
print(json.dumps(out))
'''
TLS_PORTS = [(993, "imaps"), (995, "pop3s"), (465, "smtps"), (25, "starttls"), (587, "starttls")]


class Lab(LabSite):
    def __init__(self, site: Path, build: Path) -> None:
        super().__init__(site, build)
        self.world = lab.stand_ins(site, build_dir=build)
        self.client = Container(self.state.client.name)
        assert self.state.provider is not None
        self.provider = Container(self.state.provider.name)
        self.secrets = site.parent / "secrets"
        fetches = {f.user: f for f in load_site(site).fetch}
        self.units = {user: f"{fetch_plan.UNIT}{fetch_plan.fetch_id(f)}.service"
                      for user, f in fetches.items()}

    def run(self, user: str) -> int:
        """Start the mailbox's unit once and wait for it; systemctl's exit status."""
        return self.mail.exec(["systemctl", "start", self.units[user]], timeout=180).returncode

    def journal(self, unit: str, since: float) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since - 1))
        return self.sh(f"journalctl -u {unit} --since '{stamp} UTC' --no-pager -o cat")

    def local(self, account: str, token: str) -> int:
        out = self.sh(f"doveadm search -u {account} mailbox INBOX text {token} || true")
        return len(out.splitlines())

    def presented(self) -> dict[int, str]:
        args = {"ip": self.state.host("mail").ip, "name": "mail.krasnoyarsk.example.org",
                "ports": TLS_PORTS}
        proc = self.client.exec(["python3", "/tmp/certs.py", json.dumps(args)], timeout=120)
        assert proc.returncode == 0, proc.stderr
        return {int(k): v for k, v in json.loads(proc.stdout).items()}


@pytest.fixture(scope="module")
def site_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("faults")
    site, build = example_lab_site(root, "faults")
    site.write_text(site.read_text() + 'postfix: {main: {message_size_limit: "300000"}}\n')
    reissue(root / "secrets", days=10)  # what a site looks like three weeks before renewal
    try:
        started = time.monotonic()
        lab.up(site, build_dir=build)
        up = time.monotonic() - started
        it = Lab(site, build)
        report = it.apply()
        print(f"\n[lab up {up:.1f} s, first apply {report.seconds:.1f} s]")
        # The timers would run the units behind the tests' backs: each test starts them.
        it.sh("systemctl stop 'mailstack-fetch@*.timer'")
        it.client.put_file("/tmp/certs.py", CERT_PROBE)
        it.client.put_file("/tmp/site-ca.crt", (it.secrets / "tls/ca.crt").read_text())
        yield it
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


def _message(token: str, size: int) -> str:
    head = (f"From: someone@outside.example.net\nSubject: {token}\nMessage-ID: <{token}@lab>\n"
            f"\n{token}\n")
    line = "y" * 76 + "\n"
    return head + line * max(0, (size - len(head)) // 78)


def _retrieved(provider_log: str, user: str) -> list[str]:
    """Dovecot's `retr=COUNT/BYTES` of each POP3 session of ``user``, in order."""
    return re.findall(rf"pop3\({re.escape(user)}\).*Disconnected: Logged out .*retr=(\d+/\d+)",
                      provider_log)


@pytest.mark.parametrize(("user", "account", "keep"), [(SHOP, IVAN, True),
                                                      (OLGA, OLGA_LOCAL, False)])
def test_an_oversized_message_stays_at_the_provider_and_is_reported_once(
        site_lab: Lab, user: str, account: str, keep: bool, capsys) -> None:
    world = site_lab.world
    world.clear_provider_mailbox(user)
    big, small = uuid.uuid4().hex, uuid.uuid4().hex
    world.put_provider_message(user, _message(big, 312000))
    world.put_provider_message(user, _message(small, 200000))
    sizes = sorted(len(m.replace("\n", "\r\n")) for m in world.provider_mailbox(user))
    assert sizes[0] < LIMIT < sizes[1]
    since = time.time()
    sessions_before = len(_retrieved(world.provider_log("dovecot"), user))
    for _ in range(3):  # each run a new getmail: what it remembers lives on disk
        assert site_lab.run(user) == 0
    def notices() -> list[str]:
        return site_lab.sh(f"doveadm search -u {account} mailbox INBOX header subject "
                           f"'{NOTICE}' || true").splitlines()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (site_lab.local(account, small) and notices()):
        time.sleep(1)
    # The small one arrived once; of the big one only the notice, once.
    assert site_lab.local(account, small) == 1
    assert site_lab.local(account, big) == 0
    assert len(notices()) == 1
    guid, uid = notices()[0].split()
    text = site_lab.sh(f"doveadm fetch -u {account} text mailbox-guid {guid} uid {uid}")
    assert "Auto-Submitted: auto-generated" in text and "Return-Path: <>" in text
    assert "is larger than this server accepts (283,616" in text
    # Left at the provider (even where collected mail is deleted), never retrieved.
    left = sorted("big" if big in m else "small" if small in m else "other"
                  for m in world.provider_mailbox(user))
    assert left == (["big", "small"] if keep else ["big"])
    journal = site_lab.journal(site_lab.units[user], since)
    warned = [line for line in journal.splitlines() if "is over the limit" in line]
    assert len(warned) == 1, journal
    assert warned[0].endswith(f"is over the limit of {LIMIT} bytes: left at the provider, "
                              f"not collected; a notice went to {account}")
    delivered = [line for line in journal.splitlines() if " delivered to " in line]
    assert len(delivered) == 1, journal  # fetch-run logs the message getmail delivered
    assert re.fullmatch(r"msg \d+/2 \(\d+ bytes\) msgid \S+ from <[^>]*>"
                        r"( to <.*>)? delivered to MDA_external command sendmail \(.*\)"
                        + (", deleted" if not keep else ""), delivered[0]), delivered[0]
    # `mailstack status` lists it while it waits there (and the timers this module stopped).
    assert main(["status", str(site_lab.site), "--lab", "-b", str(site_lab.build)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert sum("is inactive: nothing is collected" in line for line in out) == 2, out
    shown = [line for line in out if "over the limit" in line and f" -> {account}: " in line]
    assert len(shown) == 1 and shown[0].startswith("mail: "), shown
    assert f" -> {account}: a message of " in shown[0]
    if user == SHOP:  # POP3: Dovecot logs what each session retrieved
        retrieved = _retrieved(world.provider_log("dovecot"), user)[sessions_before:]
        assert len(retrieved) == 3, retrieved
        assert retrieved[1:] == ["0/0", "0/0"], retrieved
        count, size = retrieved[0].split("/")
        assert count == "1" and int(size) < LIMIT, retrieved
    world.clear_provider_mailbox(user)


def test_a_failing_run_is_visible(site_lab: Lab, capsys) -> None:
    unit = site_lab.units[SHOP]
    failed_unit = unit.replace(fetch_plan.UNIT, fetch_plan.FAILED_UNIT)
    right = (site_lab.secrets / "provider/shop").read_text().strip()
    site_lab.world.set_provider_password(SHOP, "not-the-site's-" + uuid.uuid4().hex)
    since = time.time()
    try:
        assert site_lab.run(SHOP) != 0
        assert site_lab.sh(f"systemctl is-failed {unit} || true").strip() == "failed"
        assert unit in site_lab.sh("systemctl list-units --failed --plain --no-legend")
        time.sleep(1)
        said = site_lab.journal(failed_unit, since)
        assert (f"pop3 {SHOP} at pop.provider.example -> {IVAN}: the collection failed "
                f"(result: exit-code, exit status 127); journalctl -u {unit} says why; the "
                "timer tries again") in said, said
        assert "Authentication failed" in site_lab.journal(unit, since)
        assert main(["status", str(site_lab.site), "--lab", "-b", str(site_lab.build)]) == 1
        assert (f"mail: pop3 {SHOP} at pop.provider.example -> {IVAN}: FAILED (result: "
                f"exit-code, exit status 127; ") in capsys.readouterr().out
    finally:
        site_lab.world.set_provider_password(SHOP, right)
    assert site_lab.run(SHOP) == 0
    assert site_lab.sh(f"systemctl is-failed {unit} || true").strip() == "inactive"


def test_a_hung_run_is_ended_by_its_start_timeout(site_lab: Lab) -> None:
    unit = site_lab.units[SHOP]
    failed_unit = unit.replace(fetch_plan.UNIT, fetch_plan.FAILED_UNIT)
    assert site_lab.sh(f"systemctl show -P TimeoutStartUSec {unit}").strip() == "30min"
    # As an admin would shorten it to see it work: a drop-in of 8 s.
    site_lab.sh(f"mkdir -p /etc/systemd/system/{unit}.d && printf '[Service]\\n"
                f"TimeoutStartSec=8s\\n' > /etc/systemd/system/{unit}.d/test.conf && "
                "systemctl daemon-reload")
    site_lab.provider.exec(["sh", "-c", "kill -STOP $(pidof dovecot)"], check=True)
    since = time.time()
    try:
        started = time.monotonic()
        assert site_lab.run(SHOP) != 0
        took = time.monotonic() - started
        assert 7 < took < 30, took
        assert site_lab.sh(f"systemctl show -P Result {unit}").strip() == "timeout"
        time.sleep(1)
        said = site_lab.journal(failed_unit, since)
        assert (f"the collection failed (result: timeout, killed by signal 15); journalctl -u "
                f"{unit} says why") in said, said
    finally:
        site_lab.provider.exec(["sh", "-c", "kill -CONT $(pidof dovecot)"], check=True)
        site_lab.sh(f"rm -r /etc/systemd/system/{unit}.d && systemctl daemon-reload")
    assert site_lab.run(SHOP) == 0


def test_verify_still_sees_each_message_arrive_exactly_once(site_lab: Lab) -> None:
    report = verify.verify(site_lab.site, lab=True, build_dir=site_lab.build,
                           host_checks=False, parts=["fetch"])
    assert report.checks and all(c.ok for c in report.checks), [str(c) for c in report.checks]


def test_a_renewed_certificate_is_what_the_daemons_present_after_apply(site_lab: Lab,
                                                                       capsys) -> None:
    cert_file = site_lab.secrets / "tls/mail.crt"
    old = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert site_lab.presented() == {p: old.public_bytes(DER).hex() for p, _ in TLS_PORTS}
    checked = core.check(site_lab.site)
    assert [f.severity for f in checked.findings] == ["warning"]
    assert "the certificate expires on" in str(checked.findings[0])
    assert main(["secrets", str(site_lab.site), "--renew"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"renewed {cert_file}: it expires on ")
    new = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > \
        datetime.timedelta(days=certs.SERVER_DAYS - 1)
    assert core.check(site_lab.site).findings == []
    started = time.monotonic()
    report = site_lab.apply()
    print(f"\n[apply after renew: {time.monotonic() - started:.1f} s, {report.changed} changed]")
    assert report.changed > 0
    deadline = time.monotonic() + 30
    want = new.public_bytes(DER).hex()
    while time.monotonic() < deadline and set((served := site_lab.presented()).values()) != {want}:
        time.sleep(1)
    assert served == {p: want for p, _ in TLS_PORTS}, {
        p: x509.load_der_x509_certificate(bytes.fromhex(v)).serial_number
        if not v.startswith("error") else v for p, v in served.items()}
    assert site_lab.apply().changed == 0
