"""Removal that removes: apply's reconcile on the office lab (issue 11).

The example site's lab shared with the office modules (tests/live/conftest.py; the site file
and the directory are put back when this module ends). Olga's account, her memberships (the
group that had her alone goes too), the `office` alias (it names her) and her remote mailbox
leave the site file, and the tests walk a site's life on the real slapd, Dovecot and systemd:
* re-apply: her entry and her alias entries are locked (`mailstackLocked: TRUE`), her mailbox
  is still there, Dovecot's user iteration no longer lists her, the fetch timer is inactive and
  disabled and its password file is gone; the recap names the DNs;
* the account back in the site: unlocked;
* removed again with `--prune`: the entries are gone, the mailbox moved to the dated archive;
* back again: created anew;
* an account added directly in LDAP (root over ldapi) makes verify's host check FAIL;
* `ldap.accounts: directory`: that account is never locked (a note in verify), while the one
  apply created and that left the site file is.
The directory state and the files are read on the host itself; what the world sees is asked
from the lab's client: Olga's IMAP and SMTP AUTH logins (her POP3 is closed by the example
anyway) and RCPT on port 25 to her and to the alias `office` (250 while in the site, 5.2.1
while locked, 5.1.1 once pruned).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mailstack import apply, verify
from mailstack.container import Container
from mailstack.ldap import ldif
from mailstack.ldap.dn import DN
from mailstack.plan import dit
from mailstack.plan import fetch as fetch_plan
from mailstack.site.load import load_site
from tests.conftest import LabSite, live
from tests.live.conftest import Office

pytestmark = live(ssh=True, ansible=True)

OLGA = "olga@krasnoyarsk.example.org"
INTRUDER = "intruder@krasnoyarsk.example.org"
OFFICE = "office@krasnoyarsk.example.org"
CHECK = "host: no account logs in that the site does not have"
HOSTNAME = "mail.krasnoyarsk.example.org"

# Runs in the lab's client: Olga's logins (IMAPS, submission) and RCPT on 25 from outside.
OUTSIDE = r"""
import imaplib, json, smtplib, ssl, sys
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
out = {}
try:
    c = imaplib.IMAP4_SSL(job["host"], 993, ssl_context=ctx, timeout=30)
    try:
        c.login(job["user"], job["password"])
        out["imap"] = "accepted"
    finally:
        c.shutdown()
except Exception as e:
    out["imap"] = f"refused: {e}"
try:
    with smtplib.SMTP(job["host"], 587, timeout=30) as s:
        s.ehlo("c.lab.test"); s.starttls(context=ctx); s.ehlo("c.lab.test")
        s.user, s.password = job["user"], job["password"]
        s.auth("PLAIN", s.auth_plain)
        out["submission"] = "accepted"
except Exception as e:
    out["submission"] = f"refused: {e}"
with smtplib.SMTP(job["host"], 25, timeout=30) as s:
    s.ehlo("c.lab.test")
    s.mail("someone@outside.example.net")
    for rcpt in job["rcpts"]:
        code, text = s.rcpt(rcpt)
        out[rcpt] = f"{code} {text.decode()}"
print(json.dumps(out))
"""


class Rec(LabSite):
    def __init__(self, site: Path, build: Path) -> None:
        super().__init__(site, build)
        self.original = yaml.safe_load(site.read_text())
        model = load_site(site)
        self.olga_dn = str(dit.account_dn(model, OLGA))
        self.alias_dns = [str(dit.alias_dn(model, a))
                          for a in ("buh@krasnoyarsk.example.org",
                                    "office@krasnoyarsk.example.org")]
        self.intruder_dn = str(dit.account_dn(model, INTRUDER))
        olga_fetch = next(f for f in model.fetch if f.account == OLGA)
        self.ident = ident = fetch_plan.fetch_id(olga_fetch)
        self.timer = f"{fetch_plan.UNIT}{ident}.timer"
        self.password_file = f"{fetch_plan.CONFIG_DIR}/{ident}.password"
        self.home = dit.mail_home(OLGA)

    def write(self, *, olga: bool = True, accounts: str = "site") -> None:
        data = copy.deepcopy(self.original)
        if not olga:
            data["accounts"] = [a for a in data["accounts"] if a["mail"] != OLGA]
            data["aliases"] = [a for a in data["aliases"] if OLGA not in a["to"]]
            data["fetch"] = [f for f in data["fetch"] if f["account"] != OLGA]
            # her memberships go too, and a group that had her alone (and what names it)
            for group in data.get("groups", []):
                group["members"] = [m for m in group["members"] if m != OLGA]
            gone = {g["name"] for g in data.get("groups", []) if not g["members"]}
            data["groups"] = [g for g in data.get("groups", []) if g["name"] not in gone]
            for group in data["groups"]:
                group["members"] = [m for m in group["members"] if m not in gone]
                group["send_as"] = [m for m in group.get("send_as", []) if m not in gone]
            for folder in data.get("shared_folders", []):
                folder["rights"] = {k: v for k, v in folder["rights"].items()
                                    if k != OLGA and k not in gone}
        data["ldap"]["accounts"] = accounts
        self.site.write_text(yaml.safe_dump(data, sort_keys=False))

    def apply(self, prune: bool = False) -> list[str]:
        report = apply.apply(self.site, inventory=self.state.inventory, build_dir=self.build,
                             prune=prune, out=lambda line: None)
        assert report.ok, report.lines()
        print(f"[apply{' --prune' if prune else ''} {report.seconds:.1f} s]")
        return report.lines()

    def locked(self, dn: str) -> bool:
        entry = self.entry(dn)
        assert entry is not None, f"{dn} is gone"
        return entry.get(dit.LOCKED.lower()) == ["TRUE"]

    def outside(self) -> dict[str, str]:
        """What the lab's client sees of Olga: her logins, and RCPT to her and to office."""
        password = (self.site.parent / "secrets" / "accounts" / OLGA).read_text().strip()
        job = {"host": HOSTNAME, "user": OLGA, "password": password, "rcpts": [OLGA, OFFICE]}
        proc = Container(self.state.client.name).exec(
            ["python3", "-c", OUTSIDE, json.dumps(job)], timeout=180)
        assert proc.returncode == 0, proc.stderr
        seen: dict[str, str] = json.loads(proc.stdout)
        return seen

    def backups(self) -> set[str]:
        """The dated backups of removed files apply has made on the mail host."""
        return set(self.sh("cd /var/backups/mailstack 2>/dev/null && ls -d removed-* "
                           "2>/dev/null; true").split())

    def kept(self, maildir: str) -> int:
        """The message files (not Dovecot's index caches) with the subject 'kept'."""
        return int(self.sh(f"find {maildir} -type f \\( -path '*/cur/*' -o -path '*/new/*' \\)"
                           " -exec grep -l '^Subject: kept' {} + | wc -l"))

    def users(self) -> set[str]:
        return set(self.sh("doveadm user '*'").split())

    def check(self) -> verify.Check:
        """verify's host check of the accounts, alone (the whole host part takes 90 s)."""
        host = self.state.host("mail")
        target = verify.Target(host.key, host.hostname, host.ip, "root", str(self.state.key))
        manifest = self.build / load_site(self.site).site / "manifest.json"
        checks = verify._host_checks(target, manifest, keyword="no_account_logs_in")
        assert [c.name for c in checks] == [CHECK], checks
        return checks[0]


@pytest.fixture(scope="module")
def rec(office_lab: Office) -> Iterator[Rec]:
    original = office_lab.site.read_text(encoding="utf-8")
    it = Rec(office_lab.site, office_lab.build)
    # a message in Olga's mailbox, so that there is something to keep and to archive
    it.sh(f"printf 'Subject: kept\\n\\nkept\\n' | doveadm save -u {OLGA}")
    try:
        yield it
    finally:
        # the shared lab as it was: the site file, no intruder, applied
        office_lab.site.write_text(original, encoding="utf-8")
        it.mail.exec(["ldapdelete", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///", it.intruder_dn],
                     timeout=60)
        office_lab.apply()


def test_what_left_the_site_is_locked_and_its_timer_stopped(rec: Rec) -> None:
    assert rec.sh(f"test -f {rec.password_file} && systemctl is-enabled {rec.timer}").strip() \
        == "enabled"
    before = rec.outside()   # the control: in the site, she logs in and receives
    assert (before["imap"], before["submission"]) == ("accepted", "accepted"), before
    assert before[OLGA].startswith("250") and before[OFFICE].startswith("250"), before
    rec.write(olga=False)
    backups = rec.backups()
    lines = rec.apply()
    seen = rec.outside()     # locked: every login refused, mail to her and office 5.2.1
    assert seen["imap"].startswith("refused") and seen["submission"].startswith("refused"), seen
    for address in (OLGA, OFFICE):
        assert seen[address].startswith("554 5.2.1"), seen
    assert rec.locked(rec.olga_dn)
    assert all(rec.locked(dn) for dn in rec.alias_dns)
    for dn in (rec.olga_dn, *rec.alias_dns):
        assert f"  locked: {dn}" in lines, lines
    assert rec.sh(f"ls {rec.home}/Maildir/cur {rec.home}/Maildir/new | wc -l").strip() != "0"
    assert OLGA not in rec.users()       # Dovecot's iteration leaves locked accounts out
    state = rec.mail.exec(["systemctl", "is-active", rec.timer]).stdout.strip()
    enabled = rec.mail.exec(["systemctl", "is-enabled", rec.timer]).stdout.strip()
    assert (state, enabled) == ("inactive", "disabled"), (state, enabled)
    assert rec.mail.exec(["test", "-e", rec.password_file]).returncode == 1
    assert f"  stopped: {rec.timer}" in lines and f"  deleted: {rec.password_file}" in lines
    # every file of that mailbox left; the secret ones (password, getmailrc) were deleted, the
    # others (its CA, its runner's JSON, the timer's drop-in) are kept in the dated backup
    assert "imap-olga" not in rec.sh("ls /etc/mailstack/fetch /etc/systemd/system")
    # (the backups this apply made: the shared lab's other modules made their own)
    new = " ".join(sorted(rec.backups() - backups))
    assert new, "apply kept no backup of the removed files"
    kept = rec.sh(f"cd /var/backups/mailstack && find {new} -type f").split()
    expected = [f"etc/mailstack/fetch/{rec.ident}.ca.crt", f"etc/mailstack/fetch/{rec.ident}.json",
                f"etc/systemd/system/{rec.timer}.d/interval.conf"]
    assert sorted(k.split("/", 1)[1] for k in kept) == expected, kept


def test_an_account_back_in_the_site_is_unlocked(rec: Rec) -> None:
    rec.write(olga=True)
    lines = rec.apply()
    assert not rec.locked(rec.olga_dn) and not any(rec.locked(dn) for dn in rec.alias_dns)
    assert f"  unlocked: {rec.olga_dn}" in lines, lines
    seen = rec.outside()     # at once: apply flushed Dovecot's auth cache
    assert (seen["imap"], seen["submission"]) == ("accepted", "accepted"), seen
    assert seen[OLGA].startswith("250") and seen[OFFICE].startswith("250"), seen
    assert OLGA in rec.users()
    assert rec.sh(f"systemctl is-enabled {rec.timer}").strip() == "enabled"


def test_prune_deletes_the_entries_and_archives_the_mailbox(rec: Rec) -> None:
    rec.write(olga=False)
    before = rec.kept(f"{rec.home}/Maildir")
    assert before >= 1
    lines = rec.apply(prune=True)
    assert rec.entry(rec.olga_dn) is None
    assert all(rec.entry(dn) is None for dn in rec.alias_dns)
    seen = rec.outside()     # pruned: unknown
    assert seen["imap"].startswith("refused") and seen["submission"].startswith("refused"), seen
    for address in (OLGA, OFFICE):
        assert seen[address].startswith("550 5.1.1"), seen
    for dn in (rec.olga_dn, *rec.alias_dns):
        assert f"  pruned: {dn}" in lines, lines
    # the dated archive (olga.2, .3... when an earlier prune of the shared lab took the name)
    prefix = f"  archived: {rec.home} -> /var/vmail/.archive/" \
             f"{time.strftime('%Y-%m-%d', time.gmtime())}/krasnoyarsk.example.org/olga"
    archived = [line for line in lines if line.startswith(prefix)]
    assert len(archived) == 1, lines
    archive = archived[0].split(" -> ", 1)[1]
    assert rec.mail.exec(["test", "-e", rec.home]).returncode == 1
    assert rec.kept(f"{archive}/Maildir") == before


def test_a_pruned_account_back_in_the_site_is_created_anew(rec: Rec) -> None:
    rec.write(olga=True)
    rec.apply()
    entry = rec.entry(rec.olga_dn)
    assert entry is not None and dit.LOCKED.lower() not in entry
    assert entry[dit.ORIGIN.lower()] == [dit.ORIGIN_SITE]
    assert OLGA in rec.users()


def _add_intruder(rec: Rec) -> None:
    """An account someone added in the directory by hand (root over ldapi)."""
    entry = ldif.Entry(DN.parse(rec.intruder_dn),
                       (("objectClass", "inetOrgPerson"), ("objectClass", "CourierMailAccount"),
                        ("cn", "Intruder"), ("sn", "Intruder"), ("mail", INTRUDER),
                        ("homeDirectory", dit.mail_home(INTRUDER)),
                        ("userPassword", dit.PLACEHOLDER_PASSWORD)))
    rec.mail.put_file("/tmp/intruder.ldif", ldif.dumps([entry]))
    rec.sh("ldapadd -Q -Y EXTERNAL -H ldapi:/// -f /tmp/intruder.ldif >/dev/null")


def test_an_account_added_in_the_directory_fails_verify(rec: Rec) -> None:
    control = rec.check()
    assert control.ok and not control.detail, control
    _add_intruder(rec)
    check = rec.check()
    assert not check.ok and INTRUDER in check.detail, check


def test_directory_mode_locks_only_what_apply_created(rec: Rec) -> None:
    rec.write(olga=False, accounts="directory")
    lines = rec.apply()
    assert rec.locked(rec.olga_dn), lines
    intruder = rec.entry(rec.intruder_dn)
    assert intruder is not None and dit.LOCKED.lower() not in intruder
    assert not any(rec.intruder_dn in line for line in lines), lines
    check = rec.check()   # verify() turns a passing check's detail into a note
    assert check.ok and INTRUDER in check.detail, check
