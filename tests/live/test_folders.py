"""The folder tree, retention and shared folders with rights, proven on the office lab.

verify's parts ``folders`` and ``shared`` pass on the applied example; each breaks when what
they prove is taken away on the host (the ACL file, the public namespace, acl_groups, the
Cyrillic folder's role), and apply puts it back. Retention: a Trash message older than the
retention is gone after a logout and a new login, a younger one stays.

Group membership reaches Dovecot as ``mailstackAclGroup``, which apply writes as ONE value with
the names joined by ',' (dit.acl_groups_value: Dovecot 2.3.19 reads only the first of several).
"""

from __future__ import annotations

import time

import pytest

from mailstack.plan import dit
from mailstack.plan import folders as pf
from mailstack.site.load import load_site
from tests.conftest import live

pytestmark = live(ssh=True, ansible=True)

IVAN, OLGA = "ivan@krasnoyarsk.example.org", "olga@krasnoyarsk.example.org"
SENT_UTF7 = "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"  # Отправленные, as Dovecot 2.3.19 lists it


def failed(checks: dict) -> list[str]:
    return sorted(name for name, c in checks.items() if not c.ok)


@pytest.fixture
def office(office_lab):
    return office_lab


def test_folders_and_shared_pass(office) -> None:
    # apply wrote each account's groups as one value
    site = load_site(office.site)
    assert office.sh(f"ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -b '{dit.account_dn(site, IVAN)}'"
                     f" -s base {dit.ACL_GROUP} | grep -i '^{dit.ACL_GROUP}:'"
                     ).strip() == f"{dit.ACL_GROUP}: management,staff"
    checks = office.checks(["folders", "shared"])
    assert checks and not failed(checks), [str(c) for c in checks.values() if not c.ok]
    names = " ".join(checks)
    assert SENT_UTF7 in names
    # the reader, the filer, the two-group user (Ivan: read Invoices as management, file into
    # Team as staff) and the folder invisible to an account without rights
    assert f"{IVAN}: Public/Invoices has the rights lrs (MYRIGHTS)" in checks
    assert f"{IVAN}: Public/Team has the rights lrwsi (MYRIGHTS)" in checks
    assert f"{OLGA}: APPEND into Public/Invoices is accepted" in checks
    assert any(n.startswith(f"{IVAN}: may read Public/Invoices but APPEND is refused")
               for n in checks)
    assert any(n.endswith("Public/Invoices is not listed") for n in checks)


def break_and_check(office, script: str, parts: list[str], must_fail: list[str]) -> list[str]:
    """Break the host with ``script``, see the named checks FAIL, then apply puts it back and
    they pass again. Returns the names that failed."""
    try:
        office.sh(script + "\ndoveadm reload; sleep 1; doveadm auth cache flush >/dev/null")
        bad = failed(office.checks(parts))
        for name in must_fail:
            assert name in bad, (name, bad)
    finally:
        office.apply()
    again = office.checks(parts)
    assert not failed(again), failed(again)
    return bad


def test_acl_file_emptied_fails(office) -> None:
    break_and_check(office, f": > {pf.ACL_FILE}", ["shared"],
                    [f"{OLGA}: Public/Invoices has the rights lrwstie (MYRIGHTS)",
                     f"{IVAN}: Public/Invoices has the rights lrs (MYRIGHTS)"])


def test_public_namespace_removed_fails(office) -> None:
    break_and_check(office, "sed -i '/^namespace public {/,/^}/d' /etc/dovecot/dovecot.conf",
                    ["shared"], [f"{OLGA}: Public/Invoices has the rights lrwstie (MYRIGHTS)"])


def test_acl_groups_lost_fails(office) -> None:
    # the userdb stops returning acl_groups: group rights are gone, the two-group user too
    break_and_check(office, "sed -i 's/,mailstackAclGroup=acl_groups//' "
                            "/etc/dovecot/dovecot-ldap-userdb.conf.ext",
                    ["shared"], [f"{IVAN}: Public/Team has the rights lrwsi (MYRIGHTS)"])


def test_first_group_only_fails(office) -> None:
    # the trap: two values in the directory, Dovecot takes the first (management): Team is lost
    site = load_site(office.site)
    try:
        office.sh(f"ldapmodify -Q -Y EXTERNAL -H ldapi:/// <<'EOF'\n"
                  f"dn: {dit.account_dn(site, IVAN)}\nchangetype: modify\n"
                  f"replace: {dit.ACL_GROUP}\n{dit.ACL_GROUP}: management\n"
                  f"{dit.ACL_GROUP}: staff\nEOF\ndoveadm auth cache flush >/dev/null")
        checks = office.checks(["shared"])
        assert f"{IVAN}: Public/Team has the rights lrwsi (MYRIGHTS)" in failed(checks)
    finally:
        office.apply()   # the site owns mailstackAclGroup: apply writes the joined value back


def test_cyrillic_sent_folder_losing_its_role_fails(office) -> None:
    # the \Sent role moves to an ASCII "Sent": the client no longer sees it on Отправленные
    bad = break_and_check(office, "sed -i 's/mailbox \"Отправленные\"/mailbox \"Sent\"/' "
                                  "/etc/dovecot/dovecot.conf", ["folders"], [])
    assert any(n.startswith(f"{OLGA}: a login shows the special-use folders") for n in bad), bad
    assert any(n.startswith(f"{IVAN}: a login shows the special-use folders") for n in bad), bad


RETENTION = r'''
import email.message, imaplib, json, ssl, sys, time
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
def login():
    c = imaplib.IMAP4_SSL(job["host"], 993, ssl_context=ctx, timeout=60)
    c.login(job["user"], job["password"])
    return c
def msg(subject):
    m = email.message.EmailMessage()
    m["From"] = m["To"] = job["user"]
    m["Subject"] = subject
    m.set_content("retention\n")
    return m.as_bytes()
c = login()
c.append("Trash", None, None, msg("old " + job["token"]))
c.logout()
time.sleep(job["age"])
c = login()
c.append("Trash", None, None, msg("young " + job["token"]))
c.logout()          # autoexpunge runs when the session ends
time.sleep(1)
c = login()
c.select("Trash")
out = {w: len(c.search(None, "SUBJECT", '"%s %s"' % (w, job["token"]))[1][0].split())
       for w in ("old", "young")}
c.logout()
print(json.dumps(out))
'''


def test_retention_expunges_old_trash(office) -> None:
    text = office.site.read_text(encoding="utf-8")
    old = "  - {name: Trash, special_use: trash, retention: 30d}"
    assert old in text
    try:
        office.site.write_text(text.replace(old, old.replace("30d", "4s")), encoding="utf-8")
        office.apply()
        assert "autoexpunge = 4 secs" in office.sh("doveconf -n | grep autoexpunge")
        token = f"r{int(time.time())}"
        got = office.client_run(RETENTION, user=OLGA, password=office.password[OLGA],
                                token=token, age=6)
        assert got == {"old": 0, "young": 1}, got
    finally:
        office.site.write_text(text, encoding="utf-8")
        office.apply()
    assert "autoexpunge = 30 days" in office.sh("doveconf -n | grep autoexpunge")


FILE_INTO = r'''
import email.message, imaplib, json, ssl, sys
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
c = imaplib.IMAP4_SSL(job["host"], 993, ssl_context=ctx, timeout=60)
c.login(job["user"], job["password"])
m = email.message.EmailMessage()
m["From"] = m["To"] = job["user"]
m["Subject"] = "kept " + job["token"]
m.set_content("kept\n")
print(json.dumps(c.append(job["folder"], None, None, m.as_bytes())[0]))
c.logout()
'''


def test_folder_leaving_the_tree_is_reported_and_kept(office) -> None:
    text = office.site.read_text(encoding="utf-8")
    line = "  - {name: Archive, special_use: archive}\n"
    assert line in text
    assert office.client_run(FILE_INTO, user=OLGA, password=office.password[OLGA],
                             token=f"k{int(time.time())}", folder="Archive") == "OK"
    try:
        office.site.write_text(text.replace(line, ""), encoding="utf-8")
        report = office.apply()
        changes = [c for h in report.hosts.values() for c in h.changes]
        assert any("left the site's tree still hold mail" in c and f"{OLGA} Archive messages="
                   in c for c in changes), changes
        kept = office.sh(f"doveadm -f flow mailbox status -u {OLGA} messages Archive")
        assert "messages=0" not in kept and "messages=" in kept, kept
    finally:
        office.site.write_text(text, encoding="utf-8")
        office.apply()


# Runs in the client: one IMAP session per step of a job's "steps" ([user, password, action,
# folder, token]); each answers what it saw.
SEEN_STEPS = r'''
import email.message, imaplib, json, ssl, sys
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
out = []
for user, pw, action, folder, token in job["steps"]:
    c = imaplib.IMAP4_SSL(job["host"], 993, ssl_context=ctx, timeout=60)
    c.login(user, pw)
    box = '"' + folder + '"'
    if action == "append":
        m = email.message.EmailMessage()
        m["From"] = m["To"] = user
        m["Subject"] = token
        m.set_content("shared\n")
        out.append(c.append(box, None, None, m.as_bytes())[0])
    else:
        c.select(box)
        _, found = c.search(None, "SUBJECT", '"' + token + '"')
        nums = found[0].split()
        if action == "mark-seen":
            for n in nums:
                c.store(n, "+FLAGS", "\\Seen")
            out.append(len(nums))
        elif action == "unseen":
            _, unseen = c.search(None, "UNSEEN", "SUBJECT", '"' + token + '"')
            out.append(len(unseen[0].split()))
        elif action == "expunge":
            for n in nums:
                c.store(n, "+FLAGS", "\\Deleted")
            c.expunge()
            out.append(len(nums))
    c.logout()
print(json.dumps(out))
'''


def test_each_user_keeps_his_own_seen_flags_on_a_shared_folder(office) -> None:
    """INDEXPVT: Olga (accounting: file, expunge) files a message into Public/Invoices and reads
    it; for Ivan (management: read) it is still unread until he reads it himself."""
    token = f"seen-{int(time.time())}"
    olga, ivan = (OLGA, office.password[OLGA]), (IVAN, office.password[IVAN])
    box = "Public/Invoices"
    got = office.client_run(SEEN_STEPS, steps=[
        [*olga, "append", box, token], [*olga, "mark-seen", box, token],
        [*olga, "unseen", box, token], [*ivan, "unseen", box, token],
        [*ivan, "mark-seen", box, token], [*ivan, "unseen", box, token],
        [*olga, "expunge", box, token]])
    # appended; Olga read it (0 unseen for her), Ivan 1 unseen, then 0 after his own read
    assert got == ["OK", 1, 0, 1, 1, 0, 1], got
