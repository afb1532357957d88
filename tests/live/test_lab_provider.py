"""Live tests of the lab's outside world for issue 5: the provider (SMTP AUTH on 465/587,
sender ownership, POP3/IMAP over TLS), the head-office relay's CA and its AUTH trap, and the
outside secrets the lab makes up. One lab (issue 5's site under a random name) per module.

Probes run in the lab's client container (an address outside every mynetworks) with the
stdlib's smtplib/poplib/imaplib, verifying certificates against what the site's secrets hold.
Needs root, podman, the image and an SSH client; skipped with the reason otherwise.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailstack import lab
from mailstack.container import Container
from tests.conftest import live
from tests.unit.test_lab_plan import site_text

pytestmark = live(ssh=True)

SITE = f"labprov-{uuid.uuid4().hex[:6]}"
SHOP = "shop@provider.example"
OLGA = "olga@provider.example"
HEAD_OFFICE_IP = "192.0.2.1"
HEAD_OFFICE_NAME = "relay.head-office.example"
OUTSIDE = ["lab/head-office-ca", "lab/provider-ca", "provider/shop", "provider/olga"]

# Runs in the client as `python3 /tmp/probe.py JSON`; prints one JSON object.
PROBE = r'''
import imaplib, json, poplib, smtplib, ssl, sys
a = json.loads(sys.argv[1])
out = {}

def context():
    ctx = ssl.create_default_context(cafile=a.get("ca"))
    return ctx

def smtp():
    if a["mode"] == "wrapper":
        s = smtplib.SMTP_SSL(a["host"], a["port"], context=context(), timeout=20)
    else:
        s = smtplib.SMTP(a["host"], a["port"], timeout=20)
        s._host = a.get("name", a["host"])  # the name the certificate is checked for
        s.ehlo()
        out["auth_before_tls"] = s.has_extn("auth")
        if a["mode"] == "starttls":
            s.starttls(context=context())
    s.ehlo()
    out["auth_offered"] = s.has_extn("auth")
    out["tls"] = s.sock.version() if hasattr(s.sock, "version") else None
    return s

try:
    if a["what"] == "smtp":
        s = smtp()
        if a.get("user"):
            s.login(a["user"], a["password"])
            out["login"] = True
        if a.get("from"):
            s.sendmail(a["from"], [a["to"]], a["message"])
            out["sent"] = True
        s.quit()
    elif a["what"] == "pop3":
        p = poplib.POP3_SSL(a["host"], a["port"], context=context(), timeout=20)
        p.user(a["user"]); p.pass_(a["password"])
        out["count"] = p.stat()[0]
        out["tops"] = [b"\n".join(p.top(i + 1, 0)[1]).decode() for i in range(out["count"])]
        p.quit()
    elif a["what"] == "imap":
        i = imaplib.IMAP4_SSL(a["host"], a["port"], ssl_context=context(), timeout=20)
        i.login(a["user"], a["password"])
        out["count"] = int(i.select("INBOX", readonly=True)[1][0])
        flags = i.fetch("1:*", "(FLAGS)")[1] if out["count"] else []
        out["flags"] = [f.decode() for f in flags if f]
        i.logout()
    out["ok"] = True
except Exception as err:
    out["ok"] = False
    out["error"] = f"{type(err).__name__}: {err}"
print(json.dumps(out))
'''


class Lab:
    def __init__(self, site_file: Path, build_dir: Path, state: lab.LabState, seconds: float):
        self.site_file = site_file
        self.build_dir = build_dir
        self.state = state
        self.up_seconds = seconds
        self.secrets = site_file.parent / "secrets"
        self.client = Container(state.client.name)

    def secret(self, name: str) -> str:
        return (self.secrets / name).read_text(encoding="utf-8").strip()

    def probe(self, **args: object) -> dict[str, object]:
        proc = self.client.exec(["python3", "/tmp/probe.py", json.dumps(args)], timeout=90)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def kw(self) -> dict[str, object]:
        return {"build_dir": self.build_dir}

    @functools.cached_property
    def world(self) -> lab.StandIns:
        return lab.stand_ins(self.site_file, build_dir=self.build_dir)


@pytest.fixture(scope="module")
def lab_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("labprov")
    site_file = root / "site.yml"
    site_file.write_text(site_text(SITE), encoding="utf-8")
    build_dir = root / "build"
    start = time.monotonic()
    try:
        state = lab.up(site_file, build_dir=build_dir)
        it = Lab(site_file, build_dir, state, time.monotonic() - start)
        it.client.put_file("/tmp/probe.py", PROBE)
        # The CAs as the site's secrets hold them: what its Postfix and getmail trust.
        it.client.put_file("/tmp/head-office-ca.crt", it.secret("lab/head-office-ca") + "\n")
        it.client.put_file("/tmp/provider-ca.crt", it.secret("lab/provider-ca") + "\n")
        yield it
    finally:
        lab.down(site_file, build_dir=build_dir)


def _wait_for(get: Callable[[], list[str]], count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(got := get()) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def _message(sender: str, subject: str) -> str:
    return (f"From: {sender}\r\nTo: partner@partner.example.net\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@lab.test>\r\n\r\nprobe\r\n")


def test_up_makes_the_missing_outside_secrets(lab_up: Lab) -> None:
    st = lab_up.state
    assert list(st.secrets_created) == OUTSIDE
    assert st.warnings == ()
    for name in OUTSIDE:
        assert (lab_up.secrets / name).stat().st_mode & 0o777 == 0o600
    assert st.provider is not None and st.provider.name == f"mailstack-{SITE}-provider"
    assert st.relay("provider") == st.provider
    assert st.relay_cas["head-office"].read_text() == \
        (lab_up.secrets / "lab/head-office-ca").read_text()
    assert st.provider_ca is not None
    assert st.provider_ca.read_text() == (lab_up.secrets / "lab/provider-ca").read_text()
    # A second up makes nothing and keeps everything running.
    again = lab.up(lab_up.site_file, build_dir=lab_up.build_dir)
    assert again == st and again.secrets_created == ()
    for name in ("smtp", "pop", "imap"):
        got = lab_up.client.exec(["getent", "hosts", f"{name}.provider.example"],
                                 check=True).stdout
        assert got.split()[0] == st.provider.ip


def test_auth_on_465_with_the_lab_password_and_a_verified_certificate(lab_up: Lab) -> None:
    lab_up.world.clear_provider_messages()
    got = lab_up.probe(what="smtp", host="smtp.provider.example", port=465, mode="wrapper",
                       ca="/tmp/provider-ca.crt", user=SHOP,
                       password=lab_up.secret("provider/shop"), to="x@partner.example.net",
                       message=_message(SHOP, "sent as shop"), **{"from": SHOP})
    assert got["ok"] is True, got
    assert got["tls"] in ("TLSv1.2", "TLSv1.3")
    kept = _wait_for(lambda: lab_up.world.provider_messages(), 1)
    assert len(kept) == 1 and "Subject: sent as shop" in kept[0]
    assert f"(Authenticated sender: {SHOP})" in kept[0]
    assert lab_up.world.provider_auth_attempts() == [SHOP]
    assert lab_up.world.relay_messages("provider") == kept
    assert f"sasl_username={SHOP}" in lab_up.world.provider_log()


def test_sending_as_an_address_the_login_does_not_own_is_refused(lab_up: Lab) -> None:
    got = lab_up.probe(what="smtp", host="smtp.provider.example", port=465, mode="wrapper",
                       ca="/tmp/provider-ca.crt", user=SHOP,
                       password=lab_up.secret("provider/shop"), to="x@partner.example.net",
                       message=_message("ivan@krasnoyarsk.example.org", "not mine"),
                       **{"from": "ivan@krasnoyarsk.example.org"})
    assert got["ok"] is False
    assert ("Sender address rejected: not owned by user shop@provider.example"
            in str(got["error"])), got


def test_without_login_nothing_is_taken(lab_up: Lab) -> None:
    as_shop = lab_up.probe(what="smtp", host="smtp.provider.example", port=465, mode="wrapper",
                           ca="/tmp/provider-ca.crt", to="x@partner.example.net",
                           message=_message(SHOP, "no login"), **{"from": SHOP})
    assert as_shop["ok"] is False
    assert "Sender address rejected: not logged in" in str(as_shop["error"])
    other = lab_up.probe(what="smtp", host="smtp.provider.example", port=587, mode="starttls",
                         ca="/tmp/provider-ca.crt", to="x@partner.example.net",
                         message=_message("a@b.example", "no login"), **{"from": "a@b.example"})
    assert other["ok"] is False
    assert "Recipient address rejected: Access denied" in str(other["error"])
    # 587: AUTH only after STARTTLS.
    assert (other["auth_before_tls"], other["auth_offered"]) == (False, True)


def test_a_wrong_password_is_refused(lab_up: Lab) -> None:
    lab_up.world.set_provider_password(SHOP, "not-the-site's")
    try:
        got = lab_up.probe(what="smtp", host="smtp.provider.example", port=587,
                           mode="starttls", ca="/tmp/provider-ca.crt", user=SHOP,
                           password=lab_up.secret("provider/shop"))
        assert got["ok"] is False and "535" in str(got["error"]), got
        assert lab_up.probe(what="smtp", host="smtp.provider.example", port=587,
                            mode="starttls", ca="/tmp/provider-ca.crt", user=SHOP,
                            password="not-the-site's")["ok"] is True
    finally:
        lab_up.world.set_provider_password(SHOP, lab_up.secret("provider/shop"))
    log = lab_up.world.provider_log()
    assert f"authentication failed: (reason unavailable), sasl_username={SHOP}" in log


def test_pop3_and_imap_show_what_was_put_there(lab_up: Lab) -> None:
    world = lab_up.world
    world.put_provider_message(SHOP, "From: a@b.example\nSubject: for pop\n\nhi\n")
    world.put_provider_message(OLGA, "From: a@b.example\nSubject: read\n\nhi\n", seen=True)
    assert len(lab_up.world.provider_mailbox(SHOP)) == 1
    pop = lab_up.probe(what="pop3", host="pop.provider.example", port=995,
                       ca="/tmp/provider-ca.crt", user=SHOP,
                       password=lab_up.secret("provider/shop"))
    assert pop["ok"] is True, pop
    assert pop["count"] == 1 and "Subject: for pop" in str(pop["tops"])
    imap = lab_up.probe(what="imap", host="imap.provider.example", port=993,
                        ca="/tmp/provider-ca.crt", user=OLGA,
                        password=lab_up.secret("provider/olga"))
    assert imap["ok"] is True, imap
    assert imap["count"] == 1 and "\\Seen" in str(imap["flags"])
    logins = lab_up.world.provider_log("dovecot")
    assert f"pop3-login: Info: Login: user=<{SHOP}>" in logins
    assert f"imap-login: Info: Login: user=<{OLGA}>" in logins


def test_head_office_offers_auth_and_shows_who_tried(lab_up: Lab) -> None:
    lab_up.world.clear_relay_messages("head-office")
    assert lab_up.world.relay_auth_attempts("head-office") == []
    got = lab_up.probe(what="smtp", host=HEAD_OFFICE_IP, port=25, mode="starttls",
                       name=HEAD_OFFICE_NAME, ca="/tmp/head-office-ca.crt", user=SHOP,
                       password=lab_up.secret("provider/shop"))
    assert got["auth_offered"] is True
    assert got["ok"] is False and "535" in str(got["error"]), got
    assert lab_up.world.relay_auth_attempts("head-office") == [SHOP]
    # Mail from the lab network still goes without a login.
    sent = lab_up.probe(what="smtp", host=HEAD_OFFICE_IP, port=25, mode="starttls",
                        name=HEAD_OFFICE_NAME, ca="/tmp/head-office-ca.crt",
                        to="boss@head-office.example", message=_message("a@b.example", "hq"),
                        **{"from": "a@b.example"})
    assert sent["ok"] is True, sent


def test_head_office_certificate_verifies_only_as_the_site_says(lab_up: Lab) -> None:
    def check(name: str, ca: str) -> dict[str, object]:
        return lab_up.probe(what="smtp", host=HEAD_OFFICE_IP, port=25, mode="starttls",
                            name=name, ca=ca)

    assert check(HEAD_OFFICE_NAME, "/tmp/head-office-ca.crt")["ok"] is True
    wrong_name = check("mail.head-office.example", "/tmp/head-office-ca.crt")
    assert "Hostname mismatch" in str(wrong_name["error"]), wrong_name
    wrong_ca = check(HEAD_OFFICE_NAME, "/tmp/provider-ca.crt")
    assert "certificate verify failed" in str(wrong_ca["error"]), wrong_ca
    # What the site's Postfix does (smtp_tls_security_level = secure, its CA file, tls_name).
    mail = Container(lab_up.state.host("mail").name)
    mail.put_file("/tmp/head-office-ca.crt", lab_up.secret("lab/head-office-ca") + "\n")
    finger = mail.exec(["posttls-finger", "-c", "-l", "secure", "-F", "/tmp/head-office-ca.crt",
                        f"[{HEAD_OFFICE_IP}]:25", HEAD_OFFICE_NAME], timeout=60)
    assert "Verified TLS connection established" in finger.stdout + finger.stderr


def test_a_broken_relay_certificate_does_not_verify(lab_up: Lab) -> None:
    def check() -> dict[str, object]:
        return lab_up.probe(what="smtp", host=HEAD_OFFICE_IP, port=25, mode="starttls",
                            name=HEAD_OFFICE_NAME, ca="/tmp/head-office-ca.crt")

    lab_up.world.break_relay_certificate("head-office")
    try:
        broken = check()
        assert broken["ok"] is False
        assert "certificate verify failed: unable to get local issuer certificate" in \
            str(broken["error"])
    finally:
        lab_up.world.restore_relay_certificate("head-office")
    assert check()["ok"] is True


def test_down_removes_the_lab_but_keeps_its_cas(lab_up: Lab) -> None:
    st = lab_up.state
    removed = lab.down(lab_up.site_file, build_dir=lab_up.build_dir)
    assert sorted(removed) == sorted(c.name for c in st.containers)
    names = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert not set(names) & set(st.names)
    assert not st.lab_dir.exists()
    ca_dir = lab_up.build_dir / SITE / "lab-ca"
    assert sorted(p.name for p in ca_dir.iterdir()) == [
        "provider-ca.crt", "provider-ca.key", "relay-head-office-ca.crt",
        "relay-head-office-ca.key"]
    # The next lab would use the same CAs, so the secrets written before still fit.
    report = lab.prepare_outside_secrets(lab_up.site_file, build_dir=lab_up.build_dir)
    assert (report.created, report.warnings) == ((), ())
