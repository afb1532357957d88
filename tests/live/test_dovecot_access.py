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

import re
import shutil
import time
from pathlib import Path

import pytest

from mailstack import lab, secrets, verify
from mailstack.plan import dit, dovecot
from mailstack.site.load import load_site
from tests.conftest import example_lab_site, live
from tests.live.conftest import Office

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


class Access(Office):
    """The office lab's helpers on this module's own lab (its site differs)."""

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

    def host_checks(self, keyword: str = "") -> dict[str, verify.Check]:
        """Only this feature's host checks (the whole testinfra run takes minutes)."""
        return super().host_checks(keyword or HOST_KEYWORD)


def _lab_site(root: Path) -> tuple[Path, Path]:
    site, build = example_lab_site(root, "dove")
    text = site.read_text(encoding="utf-8")
    # the example's Olga: IMAP and submission only, and a quota (here 1M, to fill it)
    text = text.replace("    protocols: [imap, submission]\n    quota: 2G\n",
                        "    protocols: [imap, submission]\n    quota: 1M\n", 1)
    text = text.replace(
        "  - mail: probe@krasnoyarsk.example.org\n",
        f"  - mail: {LOCKED}\n    name: Left The Company\n    enabled: false\n"
        "  - mail: probe@krasnoyarsk.example.org\n", 1)
    # the tests refuse logins on purpose: the lab's addresses are never banned
    text = text.replace("  never: []", "  never: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]")
    assert "quota: 1M" in text and LOCKED in text and "10.0.0.0/8" in text
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
                 f"{LOCKED} (locked): IMAP, POP3, submission and ManageSieve refuse its login"):
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


HOST_KEYWORD = "auth_cache or deny_passdb or its_quota"
HOST_CACHE = "host: the auth cache is on"
HOST_DENY = "host: the deny passdb comes first"
HOST_QUOTA = "host: each account has its quota and no other"


def test_the_checks_fail_on_broken_deployments(access_lab: Access) -> None:
    # the control is the last step: once the files are back every check passes again
    conf, userdb = "/etc/dovecot/dovecot.conf", dovecot.USERDB_FILE
    access_lab.sh(f"cp -p {conf} /root/dovecot.conf.good && cp -p {userdb} /root/userdb.good")
    try:
        # 1. no deny passdb: olga's POP3 and the locked account's logins open up
        access_lab.sh(f"python3 - <<'EOF'\nimport re\np = '{conf}'\nt = open(p).read()\n"
                      "t = re.sub(r'passdb \\{\\n  name = deny_service\\n.*?\\n\\}\\n', '', t, "
                      "count=1, flags=re.S)\nopen(p, 'w').write(t)\nEOF\n"
                      "systemctl reload dovecot && sleep 2")
        assert "deny = yes" not in access_lab.sh("doveconf -n")
        broken = access_lab.checks(["access"]) | access_lab.host_checks()
        for name in (f"{OLGA}: pop3 refuses its login (not in its protocols)",
                     f"{LOCKED} (locked): IMAP, POP3, submission and ManageSieve refuse its login",
                     HOST_DENY):
            assert not broken[name].ok, name
        # 2. the cache off; 3. the quota rule lost from the userdb
        access_lab.sh(f"cp -p /root/dovecot.conf.good {conf} && "
                      f"sed -i 's/^auth_cache_size = .*/auth_cache_size = 0/' {conf} && "
                      f"sed -i 's/,{dit.QUOTA}=quota_rule=[^,]*//' {userdb} && "
                      "systemctl reload dovecot && sleep 2")
        broken = access_lab.host_checks()
        assert not broken[HOST_CACHE].ok and not broken[HOST_QUOTA].ok, \
            (broken[HOST_CACHE], broken[HOST_QUOTA])
        print(f"\n[broken: {broken[HOST_CACHE].detail} / {broken[HOST_QUOTA].detail}]")
    finally:
        access_lab.sh(f"cp -p /root/dovecot.conf.good {conf} && cp -p /root/userdb.good {userdb}"
                      " && systemctl reload dovecot && sleep 2")
    again = access_lab.checks(["access"]) | access_lab.host_checks()
    assert {n: c.detail for n, c in again.items() if not c.ok} == {}
    assert {HOST_CACHE, HOST_DENY, HOST_QUOTA} <= set(again)


# Runs on the mail host as root: N messages of SIZE bytes written straight into a Maildir's cur/
# (S= and W= in the names, as Dovecot writes them), owned by vmail.
GENERATE = r"""
import os, sys, time
home, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cur = os.path.join(home, "Maildir", "cur")
os.makedirs(cur, exist_ok=True)
line = b"y" * 76 + b"\n"
now = int(time.time())
for i in range(n):
    head = (f"From: generator@outside.example.net\nTo: {sys.argv[4]}\nSubject: generated {i}\n"
            f"Message-ID: <generated-{i}@mailstack.invalid>\n"
            "Date: Tue, 01 Dec 2026 00:00:00 +0000\n\n").encode()
    data = head + line * ((size - len(head)) // len(line))
    vsize = len(data) + data.count(10)  # CRLF: one more byte per line
    name = f"{now - n + i}.M{i}P1.generated,S={len(data)},W={vsize}:2,S"
    with open(os.path.join(cur, name), "wb") as f:
        f.write(data)
os.system(f"chown -R vmail:vmail {os.path.join(home, 'Maildir')}")
"""

# Runs in the client: STATUS, then FETCH of the last message's subject, over IMAPS.
READ_LAST = r"""
import imaplib, json, ssl, sys, time
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
out = {}
t = time.monotonic()
c = imaplib.IMAP4_SSL(job["host"], 993, ssl_context=ctx, timeout=600)
c.login(job["user"], job["password"])
out["status"] = c.status("INBOX", "(MESSAGES)")[1][0].decode()
out["status_s"] = round(time.monotonic() - t, 1)
t = time.monotonic()
typ, data = c.select("INBOX", readonly=True)
n = int(data[0])
typ, data = c.fetch(str(n), "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
out["last"] = data[0][1].decode().strip()
typ, data = c.search(None, "SUBJECT", '"after the wall"')
out["found"] = len(data[0].split())
out["fetch_s"] = round(time.monotonic() - t, 1)
c.logout()
print(json.dumps(out))
"""

BIG = 2100  # messages of 1 MiB: 2.2 GB, over 2 GiB


@pytest.mark.slow
def test_bigmailbox_over_2_gib_reads_and_receives(access_lab: Access) -> None:
    """No mailbox size wall: ivan (no quota) has 2.2 GB of generated mail; a message still
    arrives by SMTP and is read over IMAP. Opt-in: `make bigmailbox`."""
    home = dit.mail_home(IVAN)
    # the mailbox and its index exist first, as on a server that has been receiving for years
    assert access_lab.send(IVAN, 1000, "before the wall") == {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "before the wall" not in access_lab.sh(
            f"doveadm fetch -u {IVAN} hdr.subject mailbox INBOX"):
        time.sleep(1)
    started = time.monotonic()
    access_lab.mail.put_file("/root/generate.py", GENERATE, 0o600)
    access_lab.sh(f"python3 /root/generate.py {home} {BIG} 1048576 {IVAN}")
    generated = time.monotonic() - started
    # Dovecot indexes files that appeared behind its back at its next sync (LMTP's save does
    # not sync first: the message would get a UID below them); mail that arrived over years
    # was indexed as it came
    t = time.monotonic()
    status = access_lab.sh(f"doveadm mailbox status -u {IVAN} 'messages vsize' INBOX")
    indexed = time.monotonic() - t
    size = int(access_lab.sh(f"du -sb {home}/Maildir").split()[0])
    assert size > 2 ** 31, size
    t = time.monotonic()
    assert access_lab.send(IVAN, 50_000, "after the wall") == {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        log = access_lab.sh("journalctl -u postfix@- --since -10min --no-pager -o cat "
                            f"| grep 'to=<{IVAN}>' | tail -1")
        if "status=" in log:
            break
        time.sleep(1)
    delivered = time.monotonic() - t
    assert "status=sent" in log, log
    read = access_lab.client_run(READ_LAST, user=IVAN, password=access_lab.password[IVAN])
    quota = access_lab.sh(f"doveadm quota get -u {IVAN}")
    print(f"\n[{size / 1e9:.2f} GB generated in {generated:.0f} s; first sync {indexed:.1f} s "
          f"({status.strip()}); SMTP->LMTP delivery "
          f"{delivered:.1f} s; IMAP {read}; quota: {' '.join(quota.split())}]")
    assert read["last"] == "Subject: after the wall", read  # type: ignore[index]
    assert read["found"] == 1, read  # type: ignore[index]
    count = re.search(r"MESSAGES (\d+)", read["status"])  # type: ignore[index]
    assert count and int(count.group(1)) >= BIG + 1, read
    assert re.search(r"STORAGE\s+\d+\s+-\s", quota), quota
    access_lab.sh(f"rm -f {home}/Maildir/cur/*.generated,* && doveadm force-resync -u {IVAN} "
                  "INBOX && doveadm quota recalc -u " + IVAN)
