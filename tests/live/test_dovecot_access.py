"""Per-account services, locked accounts, the auth cache and quotas, live on one lab.

The example site (its own name) with olga limited to IMAP and submission and a 1 MiB quota, a
locked account (``enabled: false``), and the lab's addresses never banned (the tests refuse
logins on purpose). Brought up from the prepared image and applied once. Then, from the lab's
client:
* verify's ``access`` part: olga's POP3 is refused, her IMAP and submission work, mail to her
  still arrives; the locked account logs in nowhere; Dovecot's log names the reason;
* the auth cache: a password changed directly in LDAP (RFC 3062, root over ldapi) leaves the
  old one working until `doveadm auth cache flush` (the control), then the old one fails at
  once and the new one works; the same for a lock added directly; apply flushes by itself
  when the directory's entries changed;
* quotas: at 90 % olga gets the warning, a message that would exceed her quota is deferred
  (LMTP 452 4.2.2, kept in Postfix's queue, nothing bounced), ivan (no quota) takes more;
* broken deployments: without the deny passdb the access checks and the host check FAIL;
  with the cache off or a quota rule lost, their host checks FAIL.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from mailstack import apply, lab, secrets, verify
from mailstack.container import Container
from mailstack.plan import dit, dovecot, layout
from mailstack.site.load import load_site
from tests.conftest import LabSite, example_lab_site, live

pytestmark = live(ssh=True, ansible=True)

IVAN, OLGA = "ivan@krasnoyarsk.example.org", "olga@krasnoyarsk.example.org"
LOCKED = "gone@krasnoyarsk.example.org"
HOSTNAME = "mail.krasnoyarsk.example.org"

# Runs in the client: one login per (service, user, password); accepted or the answer.
LOGIN = r"""
import imaplib, json, poplib, smtplib, ssl, sys
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
def one(service, user, pw):
    try:
        if service == "imap":
            c = imaplib.IMAP4_SSL(job["host"], 993, ssl_context=ctx, timeout=30)
            try:
                c.login(user, pw)
            finally:
                c.shutdown()
        elif service == "pop3":
            c = poplib.POP3_SSL(job["host"], 995, context=ctx, timeout=30)
            try:
                c.user(user)
                c.pass_(pw)
            finally:
                c.quit()
        else:
            with smtplib.SMTP(job["host"], 587, timeout=30) as s:
                s.ehlo("c.lab.test"); s.starttls(context=ctx); s.ehlo("c.lab.test")
                s.user, s.password = user, pw
                s.auth("PLAIN", s.auth_plain)
        return "accepted"
    except Exception as e:
        return f"refused: {e}"
print(json.dumps([one(*t) for t in job["tries"]]))
"""

# Runs in the client: a message of about SIZE bytes from outside to RCPT on port 25.
SEND = r"""
import email.message, json, smtplib, ssl, sys
job = json.loads(sys.argv[1])
m = email.message.EmailMessage()
m["From"], m["To"], m["Subject"] = "sender@outside.example.net", job["rcpt"], job["subject"]
m.set_content(("x" * 76 + "\n") * (job["size"] // 77))
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
with smtplib.SMTP(job["host"], 25, timeout=60) as s:
    s.ehlo("c.example.net"); s.starttls(context=ctx); s.ehlo("c.example.net")
    print(json.dumps(s.sendmail(m["From"], [job["rcpt"]], m.as_bytes())))
"""


class Access(LabSite):
    def __init__(self, site: Path, build: Path, root: Path) -> None:
        super().__init__(site, build)
        self.root = root
        model = load_site(site)
        store = secrets.SecretStore(root / "secrets")
        self.password = {a.mail: store.read(layout.account_secret(a)) for a in model.accounts}
        self.client = Container(self.state.client.name)

    def client_run(self, script: str, **job: object) -> object:
        proc = self.client.exec(["python3", "-c", script, json.dumps({"host": HOSTNAME, **job})],
                                timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def logins(self, *tries: tuple[str, str, str]) -> list[str]:
        return self.client_run(LOGIN, tries=list(tries))  # type: ignore[return-value]

    def send(self, rcpt: str, size: int, subject: str) -> object:
        return self.client_run(SEND, rcpt=rcpt, size=size, subject=subject)

    def ldap(self, ldif: str) -> None:
        """Change the directory directly, as root over ldapi (not through apply)."""
        proc = self.mail.exec(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"],
                              input=ldif, timeout=60)
        assert proc.returncode == 0, proc.stderr

    def set_password(self, mail: str, new: str) -> None:
        """RFC 3062 as root (ldappasswd -T reads the new password from a 0600 file)."""
        self.mail.put_file("/root/.newpw", new, 0o600)
        dn = str(dit.account_dn(load_site(self.site), mail))
        self.sh(f"ldappasswd -Q -Y EXTERNAL -H ldapi:/// -T /root/.newpw '{dn}'; "
                "rm -f /root/.newpw")

    def flush(self, user: str | None = None) -> str:
        return self.sh(" ".join(dovecot.flush_command(user)))

    def checks(self, parts: list[str], host: bool = False) -> dict[str, verify.Check]:
        # "host" names no probe part: with it alone only the host checks run
        report = verify.verify(self.site, lab=True, build_dir=self.build,
                               parts=parts or ["host"], host_checks=host)
        return {c.name: c for c in report.checks}

    def journal(self, since: str) -> str:
        return self.sh(f"journalctl --since '{since}' --no-pager -o cat")

    def now(self) -> str:
        return self.sh("date '+%Y-%m-%d %H:%M:%S'").strip()

    def apply(self) -> apply.ApplyReport:
        report = apply.apply(self.site, inventory=self.state.inventory, build_dir=self.build,
                             out=lambda line: None)
        assert report.ok, report.lines()
        return report


def _lab_site(root: Path) -> tuple[Path, Path]:
    site, build = example_lab_site(root, "dove")
    text = site.read_text(encoding="utf-8")
    text = text.replace(
        "  - mail: olga@krasnoyarsk.example.org\n    name: Olga Sidorova\n",
        "  - mail: olga@krasnoyarsk.example.org\n    name: Olga Sidorova\n"
        "    protocols: [imap, submission]\n    quota: 1M\n", 1)
    text = text.replace(
        "  - mail: probe@krasnoyarsk.example.org\n",
        f"  - mail: {LOCKED}\n    name: Left The Company\n    enabled: false\n"
        "  - mail: probe@krasnoyarsk.example.org\n", 1)
    # the tests refuse logins on purpose: the lab's addresses are never banned
    text = text.replace("  never: []", "  never: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]")
    assert "protocols: [imap, submission]" in text and LOCKED in text and "10.0.0.0/8" in text
    site.write_text(text, encoding="utf-8")
    secrets.generate(load_site(site), root / "secrets")
    return site, build


@pytest.fixture(scope="module")
def access_lab(tmp_path_factory) -> Access:
    root = tmp_path_factory.mktemp("dove")
    site, build = _lab_site(root)
    try:
        started = time.monotonic()
        lab.up(site, build_dir=build)
        world = Access(site, build, root)
        world.apply()
        print(f"\n[lab up and first apply: {time.monotonic() - started:.0f} s]")
        yield world
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


def test_disabled_services_refuse_the_login_others_work_and_mail_arrives(
        access_lab: Access) -> None:
    since = access_lab.now()
    checks = access_lab.checks(["access"])
    assert {n: c.detail for n, c in checks.items() if not c.ok} == {}
    for name in (f"{OLGA}: pop3 refuses its login (not in its protocols)",
                 f"{OLGA}: imap accepts its login (control)",
                 f"{OLGA}: submission accepts its login (control)",
                 f"{OLGA}: mail still arrives (seen over IMAP)",
                 f"{LOCKED} (locked): IMAP, POP3 and submission refuse its login"):
        assert name in checks, sorted(checks)
    # the client saw a generic failure, the log names the reason
    assert access_lab.logins(("pop3", OLGA, access_lab.password[OLGA])) == [
        "refused: b'-ERR [AUTH] Authentication failed.'"]
    log = access_lab.journal(since)
    disabled = [line for line in log.splitlines() if "(user disabled)" in line]
    assert any(line.startswith("pop3-login: Disconnected") and f"user=<{OLGA}>" in line
               for line in disabled), log[-3000:]
    assert "auth: User found from deny passdb" in log
    print("\n[log: " + next(line for line in disabled if OLGA in line) + "]")
    # fail2ban counts no good login: the deny passdb's "unknown user" for accounts it does
    # not list is logged under its own name
    assert f"{dovecot.DENY_PASSDB_NAME}({IVAN}" in log or \
        f"{dovecot.DENY_PASSDB_NAME}({OLGA}" in log
    access_lab.sh(f"journalctl --since '{since}' --no-pager -o cat > /tmp/dove.log")
    matched = access_lab.sh("fail2ban-regex --print-all-matched /tmp/dove.log "
                            "/etc/fail2ban/filter.d/dovecot.conf || true")
    assert dovecot.DENY_PASSDB_NAME not in matched.split("Matched line(s):")[-1], matched


def test_a_password_changed_in_ldap_needs_the_flush_and_then_works_at_once(
        access_lab: Access) -> None:
    old, new = access_lab.password[IVAN], "Changed-in-ldap-7f3a1"
    assert access_lab.logins(("imap", IVAN, old)) == ["accepted"]
    access_lab.set_password(IVAN, new)
    try:
        # control: the cache still answers with the old password
        assert access_lab.logins(("imap", IVAN, old)) == ["accepted"]
        assert "cache entries flushed" in access_lab.flush(IVAN)
        seen = access_lab.logins(("imap", IVAN, old), ("imap", IVAN, new),
                                 ("submission", IVAN, new))
        assert seen[0].startswith("refused") and seen[1:] == ["accepted", "accepted"], seen
    finally:
        access_lab.set_password(IVAN, old)
        access_lab.flush(IVAN)


def test_a_lock_added_in_ldap_is_refused_at_once_after_the_flush(access_lab: Access) -> None:
    pw = access_lab.password[IVAN]
    dn = str(dit.account_dn(load_site(access_lab.site), IVAN))
    assert access_lab.logins(("imap", IVAN, pw)) == ["accepted"]
    access_lab.ldap(f"dn: {dn}\nchangetype: modify\nadd: {dit.LOCKED}\n{dit.LOCKED}: TRUE\n")
    try:
        # control: within the negative TTL the cached "not denied" still lets him in
        assert access_lab.logins(("imap", IVAN, pw)) == ["accepted"]
        access_lab.flush(IVAN)
        seen = access_lab.logins(("imap", IVAN, pw), ("pop3", IVAN, pw),
                                 ("submission", IVAN, pw))
        assert all(s.startswith("refused") for s in seen), seen
    finally:
        access_lab.ldap(f"dn: {dn}\nchangetype: modify\ndelete: {dit.LOCKED}\n")
        access_lab.flush(IVAN)
    assert access_lab.logins(("imap", IVAN, pw)) == ["accepted"]


def test_apply_flushes_the_cache_when_the_directory_changed(access_lab: Access) -> None:
    """A password changed behind Dovecot's back keeps working from the cache (the control
    above); an apply that changes an entry (olga's quota) flushes every Dovecot host."""
    old, new = access_lab.password[IVAN], "Changed-before-apply-2c9"
    assert access_lab.logins(("imap", IVAN, old)) == ["accepted"]
    access_lab.set_password(IVAN, new)
    text = access_lab.site.read_text(encoding="utf-8")
    try:
        assert access_lab.logins(("imap", IVAN, old)) == ["accepted"]
        access_lab.site.write_text(text.replace("quota: 1M", "quota: 2M", 1), encoding="utf-8")
        report = access_lab.apply()
        assert any("Empty Dovecot's auth cache" in line for line in report.lines()), \
            report.lines()
        seen = access_lab.logins(("imap", IVAN, old), ("imap", IVAN, new))
        assert seen[0].startswith("refused") and seen[1] == "accepted", seen
    finally:
        access_lab.site.write_text(text, encoding="utf-8")
        access_lab.set_password(IVAN, old)
        access_lab.apply()
        access_lab.flush()


def _queue(lab_: Access) -> str:
    return lab_.sh("postqueue -p")


def test_quota_warns_at_90_percent_defers_what_does_not_fit_and_no_quota_is_no_limit(
        access_lab: Access) -> None:
    since = access_lab.now()
    quota = access_lab.sh(f"doveadm quota get -u {OLGA}")
    assert re.search(r"STORAGE\s+\d+\s+1024\s", quota), quota
    assert access_lab.send(OLGA, 950_000, "fills 90 percent") == {}
    deadline = time.monotonic() + 30
    subjects = ""
    while time.monotonic() < deadline:
        subjects = access_lab.sh(f"doveadm fetch -u {OLGA} hdr.subject mailbox INBOX")
        if "full" in subjects:
            break
        time.sleep(1)
    assert "Your mailbox is 90% full" in subjects, subjects
    # a message that does not fit: deferred by LMTP, kept in Postfix's queue, no bounce
    assert access_lab.send(OLGA, 200_000, "does not fit") == {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "Quota exceeded" not in _queue(access_lab):
        time.sleep(1)
    queue = _queue(access_lab)
    assert "452 4.2.2" in queue and "Quota exceeded" in queue and OLGA in queue, queue
    log = access_lab.journal(since)
    deferred = [line for line in log.splitlines() if "status=deferred" in line and OLGA in line]
    print(f"\n[{deferred[0] if deferred else log[-2000:]}]")
    assert deferred and "dsn=4.2.2" in deferred[0]
    assert "status=bounced" not in log and "sender non-delivery notification" not in log
    # no quota, no limit: ivan takes more than olga's whole quota
    assert access_lab.send(IVAN, 1_500_000, "larger than olga's quota") == {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = access_lab.sh(f"doveadm fetch -u {IVAN} hdr.subject mailbox INBOX")
        if "larger than olga's quota" in got:
            break
        time.sleep(1)
    assert "larger than olga's quota" in got
    assert re.search(r"STORAGE\s+\d+\s+-\s", access_lab.sh(f"doveadm quota get -u {IVAN}"))
    access_lab.sh("postsuper -d ALL deferred")
    access_lab.sh(f"doveadm expunge -u {OLGA} mailbox INBOX all && doveadm quota recalc -u {OLGA}")


HOST_CACHE = "host: the auth cache is on"
HOST_DENY = "host: the deny passdb comes first"
HOST_QUOTA = "host: each account has its quota and no other"


def test_the_checks_fail_on_broken_deployments(access_lab: Access) -> None:
    good = access_lab.checks(["access"], host=True)
    for name in (HOST_CACHE, HOST_DENY, HOST_QUOTA):
        assert good[name].ok, good[name].detail
    conf, userdb = "/etc/dovecot/dovecot.conf", dovecot.USERDB_FILE
    access_lab.sh(f"cp -p {conf} /root/dovecot.conf.good && cp -p {userdb} /root/userdb.good")
    try:
        # 1. no deny passdb: olga's POP3 and the locked account's logins open up
        access_lab.sh(f"python3 - <<'EOF'\nimport re\np = '{conf}'\nt = open(p).read()\n"
                      "t = re.sub(r'passdb \\{\\n  name = deny_service\\n.*?\\n\\}\\n', '', t, "
                      "count=1, flags=re.S)\nopen(p, 'w').write(t)\nEOF\n"
                      "systemctl reload dovecot && sleep 2")
        assert "deny = yes" not in access_lab.sh("doveconf -n")
        broken = access_lab.checks(["access"], host=True)
        for name in (f"{OLGA}: pop3 refuses its login (not in its protocols)",
                     f"{LOCKED} (locked): IMAP, POP3 and submission refuse its login",
                     HOST_DENY):
            assert not broken[name].ok, name
        # 2. the cache off; 3. the quota rule lost from the userdb
        access_lab.sh(f"cp -p /root/dovecot.conf.good {conf} && "
                      f"sed -i 's/^auth_cache_size = .*/auth_cache_size = 0/' {conf} && "
                      f"sed -i 's/,{dit.QUOTA}=quota_rule=[^,]*$//' {userdb} && "
                      "systemctl reload dovecot && sleep 2")
        broken = access_lab.checks([], host=True)
        assert not broken[HOST_CACHE].ok and not broken[HOST_QUOTA].ok, \
            (broken[HOST_CACHE], broken[HOST_QUOTA])
        print(f"\n[broken: {broken[HOST_CACHE].detail} / {broken[HOST_QUOTA].detail}]")
    finally:
        access_lab.sh(f"cp -p /root/dovecot.conf.good {conf} && cp -p /root/userdb.good {userdb}"
                      " && systemctl reload dovecot && sleep 2")
    again = access_lab.checks(["access"], host=True)
    assert {n: c.detail for n, c in again.items() if not c.ok} == {}
