"""The directory's password policy, its root identity and locked addresses, live on one lab.

One lab for the module: the example site (its own name) with ``ldap.root_password: true``, an
account for the password changes (``self@``) and a locked one (``gone@``, ``enabled: false``,
with an alias that reaches it alone, ``old-shop@``). The lab is first applied with the code of
the last main commit before ppolicy (``OLD``: olcRootDN cn=admin with an olcRootPW, no
overlay), then with this one: the upgrade happens online, and a third apply changes nothing.
Then, on the mail host over ldapi (what a user's password change meets, whatever the
transport): a change with the old password by RFC 3062, a short one, another user's attempt,
a plain modify with cleartext, a pre-hashed value, and root's add carrying the placeholder
(apply and `user add`); from the lab's client: RCPT to locked and unlocked addresses on 25 and
587. Each part also breaks the deployment the way an admin could and sees the matching check
fail: ``by self =w``, olcRootDN back to cn=admin, a weaker policy, the locked tables taken out
of the restrictions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest

from mailstack import apply, lab, secrets, verify
from mailstack.container import Container
from mailstack.plan import dit, postfix
from mailstack.site.load import load_site
from tests.conftest import ROOT, LabSite, example_lab_site, live

pytestmark = live(ssh=True, ansible=True)

OLD = "94a12be"
"""main before this work: no ppolicy, olcRootDN cn=admin (olcRootPW with root_password)."""
DOMAIN = "krasnoyarsk.example.org"
BASE = "dc=krasnoyarsk,dc=example,dc=org"
SELF, GONE, OLD_SHOP = f"self@{DOMAIN}", f"gone@{DOMAIN}", f"old-shop@{DOMAIN}"
IVAN, OLGA = f"ivan@{DOMAIN}", f"olga@{DOMAIN}"
ADDED = (f"  - mail: {SELF}\n    name: Self Service\n"
         f"  - mail: {GONE}\n    name: Former Colleague\n    enabled: false\n"
         f"    aliases: [{OLD_SHOP}]\n")
QUALITY = "Password fails quality checking policy"

# Runs on the mail host as `python3 /tmp/pw.py` with a JSON job on stdin (Debian's python3-ldap3,
# over ldapi): each step's LDAP result and the scheme of the stored userPassword.
PASSWORDS = r'''
import json, sys, ldap3
job = json.loads(sys.stdin.read())
S = ldap3.Server("ldapi://%2Frun%2Fslapd%2Fldapi", get_info=ldap3.NONE)
def bind(dn, pw):
    c = ldap3.Connection(S, user=dn, password=pw, raise_exceptions=False)
    return c if c.bind() else None
def root():
    c = ldap3.Connection(S, authentication=ldap3.SASL, sasl_mechanism=ldap3.EXTERNAL,
                         sasl_credentials=b"", raise_exceptions=False)
    assert c.bind(), c.result
    return c
def scheme(dn):
    r = root()
    r.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userPassword"])
    value = r.response[0]["raw_attributes"]["userPassword"][0].decode()
    return value[:value.index("}") + 1] if value.startswith("{") else "cleartext"
def result(c):
    return {"result": c.result["result"], "message": c.result["message"]}
out = []
for s in job:
    if s["kind"] == "bind":
        out.append({"bound": bind(s["dn"], s["pw"]) is not None})
        continue
    if s["kind"] == "add":
        c = root()
        c.add(s["dn"], s["classes"], s["attrs"])
        out.append(result(c))
        c.delete(s["dn"])
        continue
    c = bind(s["who"], s["pw"])
    if c is None:
        out.append({"bound": False})
        continue
    if s["kind"] == "exop":
        c.extend.standard.modify_password(s["dn"], s["old"], s["new"])
    else:
        c.modify(s["dn"], {"userPassword": [(ldap3.MODIFY_REPLACE, [s["value"]])]})
    out.append({**result(c), "stored": scheme(s["dn"])})
print(json.dumps(out))
'''

# Runs in the lab's client: RCPT TO each address on 25 (from outside mynetworks) and on 587
# (logged in); {"PORT ADDRESS": "CODE TEXT"}.
RCPT = r'''
import json, smtplib, ssl, sys
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile="/tmp/site-ca.crt")
out = {}
for port in (25, 587):
    s = smtplib.SMTP(job["host"], port, timeout=30)
    s._host = job["name"]
    s.ehlo("client.lab.test")
    if port == 587:
        s.starttls(context=ctx)
        s.ehlo("client.lab.test")
        s.login(job["user"], job["password"])
    s.mail(job["user"] if port == 587 else "someone@outside.example.net")
    for rcpt in job["rcpts"]:
        code, text = s.rcpt(rcpt)
        out[f"{port} {rcpt}"] = f"{code} {text.decode()}"
    s.quit()
print(json.dumps(out))
'''


def old_code(root: Path) -> Path | None:
    """The mailstack package of commit OLD, or None where git or the commit is missing."""
    if shutil.which("git") is None:
        return None
    proc = subprocess.run(["git", "-C", str(ROOT), "archive", OLD, "mailstack"],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        return None
    where = root / "old"
    with tarfile.open(fileobj=BytesIO(proc.stdout)) as tar:
        tar.extractall(where, filter="data")
    return where


class Lab(LabSite):
    def __init__(self, site: Path, build: Path) -> None:
        super().__init__(site, build)
        self.client = Container(self.state.client.name)
        self.secrets = secrets.SecretStore(site.parent / "secrets")
        self.upgrade: apply.ApplyReport | None = None
        self.again: apply.ApplyReport | None = None

    def password(self, mail: str) -> str:
        return self.secrets.read(f"accounts/{mail}")

    def ldap(self, steps: list[dict]) -> list[dict]:
        proc = self.mail.exec(["python3", "/tmp/pw.py"], input=json.dumps(steps), timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def ldif(self, text: str) -> None:
        proc = self.mail.exec(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"],
                              input=text)
        assert proc.returncode == 0, proc.stderr

    def rcpt(self, *addresses: str) -> dict[str, str]:
        job = {"host": self.state.host("mail").ip, "name": f"mail.{DOMAIN}", "user": IVAN,
               "password": self.password(IVAN), "rcpts": list(addresses)}
        proc = self.client.exec(["python3", "/tmp/rcpt.py", json.dumps(job)], timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def locked_checks(self) -> dict[str, str | None]:
        """verify's port-25 checks of the locked addresses: name -> None, or why it FAILs."""
        report = verify.verify(self.site, lab=True, build_dir=self.build, host_checks=False,
                               parts=["port25"])
        return {c.name: None if c.ok else c.detail for c in report.checks
                if "locked address" in c.name}

    def host_check(self, check: Callable[..., None]) -> str | None:
        """One of verify's host checks against the mail host: None, or why it FAILs."""
        import testinfra

        host = testinfra.get_host(f"podman://{self.mail.name}")
        try:
            manifest = self.build / load_site(self.site).site / "manifest.json"
            check(host, json.loads(manifest.read_text())["hosts"]["mail"])
        except AssertionError as err:
            return str(err)
        return None


@pytest.fixture(scope="module")
def site_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("dirpol")
    site, build = example_lab_site(root, "dirpol")
    text = site.read_text().replace("\naliases:\n", "\n" + ADDED + "\naliases:\n", 1)
    site.write_text(text.replace("  loglevel: [stats]\n",
                                 "  loglevel: [stats]\n  root_password: true\n", 1))
    secrets.generate(load_site(site), root / "secrets")
    # the upgrade from the last commit before the policy (an apply of its code first) costs
    # about 100 s: opt-in (`make upgrade`), like the other slow scans
    old = old_code(root) if os.environ.get("MAILSTACK_TRY_UPGRADE") else None
    try:
        started = time.monotonic()
        lab.up(site, build_dir=build)
        times = [f"lab up {time.monotonic() - started:.1f} s"]
        if old is not None:
            started = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-c", "import sys; from mailstack.cli import main; "
                 "sys.exit(main(sys.argv[1:]))", "apply", str(site), "--lab", "-b", str(build)],
                env={**os.environ, "PYTHONPATH": str(old)}, cwd=root,
                capture_output=True, text=True, check=False)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            times.append(f"apply of {OLD} {time.monotonic() - started:.1f} s")
        it = Lab(site, build)
        report = it.apply()
        it.upgrade = report if old is not None else None
        it.again = it.apply()
        times += [f"apply {report.seconds:.1f} s", f"again {it.again.seconds:.1f} s"]
        print(f"\n[{', '.join(times)}]")
        it.mail.put_file("/tmp/pw.py", PASSWORDS)
        it.client.put_file("/tmp/rcpt.py", RCPT)
        it.client.put_file("/tmp/site-ca.crt", it.secrets.read("tls/ca.crt"))
        yield it
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


def test_an_applied_lab_upgrades_online_and_a_second_apply_changes_nothing(site_lab: Lab
                                                                         ) -> None:
    from mailstack.verify.testinfra import test_host as checks

    if site_lab.upgrade is None:
        pytest.skip(f"the upgrade from {OLD} is opt-in (make upgrade), or that commit is not "
                    "in this checkout")
    changes = " / ".join(site_lab.upgrade.hosts["mail"].changes)
    assert "added olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config" in changes, changes
    assert "olcRootDN, olcRootPW of olcDatabase={1}mdb,cn=config" in changes, changes
    assert f"cn=default,ou=policies,{BASE}" in changes and f"cn=admin,{BASE}" in changes
    assert f"set the password of cn=admin,{BASE}" in changes, changes
    assert site_lab.again is not None and site_lab.again.changed == 0, site_lab.again.lines()
    for check in (checks.test_the_directory_root_is_root_over_ldapi_without_a_password,
                  checks.test_slapd_checks_new_passwords_against_the_site_policy,
                  checks.test_slapacl_answers_the_acl_matrix):
        assert site_lab.host_check(check) is None, check.__name__
    # tools bind as the admin entry with the secret ldap/admin
    admin = site_lab.secrets.read("ldap/admin")
    assert site_lab.ldap([{"kind": "bind", "dn": f"cn=admin,{BASE}", "pw": admin}]) == [
        {"bound": True}]


def test_a_user_changes_his_own_password_under_the_policy(site_lab: Lab) -> None:
    me = str(dit.account_dn(load_site(site_lab.site), SELF))
    olga = str(dit.account_dn(load_site(site_lab.site), OLGA))
    first, second, third = site_lab.password(SELF), "a-new-password-of-mine", "plain-modify-pw-3"
    got = site_lab.ldap([
        {"kind": "exop", "who": me, "pw": first, "dn": me, "old": first, "new": "short9"},
        {"kind": "exop", "who": olga, "pw": site_lab.password(OLGA), "dn": me, "old": first,
         "new": "olga-was-here-long"},
        {"kind": "exop", "who": me, "pw": first, "dn": me, "old": first, "new": second},
        {"kind": "bind", "dn": me, "pw": second},
        {"kind": "bind", "dn": me, "pw": first},
        {"kind": "modify", "who": me, "pw": second, "dn": me, "value": third},
        {"kind": "bind", "dn": me, "pw": third},
        {"kind": "modify", "who": me, "pw": third, "dn": me,
         "value": "{SSHA}c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
        {"kind": "modify", "who": me, "pw": third, "dn": me, "value": "short"},
        {"kind": "bind", "dn": me, "pw": third},
        # apply (and `user add`) add entries with the placeholder as root over ldapi
        {"kind": "add", "dn": f"mail=new@{DOMAIN},ou=people,{BASE}", "classes": ["inetOrgPerson"],
         "attrs": {"cn": "New", "sn": "New", "mail": f"new@{DOMAIN}",
                   "userPassword": dit.PLACEHOLDER_PASSWORD}},
    ])
    short, other, changed, new_binds, old_binds, plain, plain_binds, hashed, short_plain, \
        still, add = got
    assert short == {"result": 19, "message": QUALITY, "stored": "{ARGON2}"}
    # olga may not write self@'s password: slapd will not even check the old one for her
    assert other["result"] == 53 and other["message"] == "unwilling to verify old password"
    assert changed == {"result": 0, "message": "", "stored": "{ARGON2}"}
    assert (new_binds, old_binds) == ({"bound": True}, {"bound": False})
    assert plain == {"result": 0, "message": "", "stored": "{ARGON2}"}  # hashed by ppolicy
    assert plain_binds == {"bound": True}
    assert hashed == {"result": 19, "message": QUALITY, "stored": "{ARGON2}"}
    assert short_plain == {"result": 19, "message": QUALITY, "stored": "{ARGON2}"}
    assert still == {"bound": True}
    assert add == {"result": 0, "message": ""}


def test_self_eq_w_breaks_the_change_with_the_old_password_and_the_matrix_sees_it(
        site_lab: Lab) -> None:
    """The control: ``by self =w`` (write without auth) on userPassword."""
    from mailstack.verify.testinfra import test_host as checks

    me = str(dit.account_dn(load_site(site_lab.site), SELF))
    out = site_lab.sh("ldapsearch -LLL -o ldif_wrap=no -Q -Y EXTERNAL -H ldapi:/// "
                      "-b 'olcDatabase={1}mdb,cn=config' -s base olcAccess")
    rule = next(line.split(": ", 1)[1] for line in out.splitlines()
                if "attrs=userPassword by self write" in line)
    broken = rule.replace("by self write", "by self =w")
    site_lab.ldif(f"dn: olcDatabase={{1}}mdb,cn=config\nchangetype: modify\ndelete: olcAccess\n"
                  f"olcAccess: {rule}\n-\nadd: olcAccess\nolcAccess: {broken}\n")
    try:
        pw = site_lab.ldap([{"kind": "bind", "dn": me, "pw": p}
                            for p in ("plain-modify-pw-3", site_lab.password(SELF))])
        current = "plain-modify-pw-3" if pw[0]["bound"] else site_lab.password(SELF)
        got = site_lab.ldap([{"kind": "exop", "who": me, "pw": current, "dn": me,
                              "old": current, "new": "eq-w-cannot-do-this"}])[0]
        assert got["result"] == 53 and got["message"] == "unwilling to verify old password"
        wrong = site_lab.host_check(checks.test_slapacl_answers_the_acl_matrix)
        assert wrong is not None and "userPassword/auth" in wrong and "DENIED" in wrong, wrong
    finally:
        site_lab.ldif(f"dn: olcDatabase={{1}}mdb,cn=config\nchangetype: modify\n"
                      f"delete: olcAccess\nolcAccess: {broken}\n-\nadd: olcAccess\n"
                      f"olcAccess: {rule}\n")
    assert site_lab.host_check(checks.test_slapacl_answers_the_acl_matrix) is None


def test_a_wrong_root_or_a_weaker_policy_fails_the_host_checks(site_lab: Lab) -> None:
    from mailstack.verify.testinfra import test_host as checks

    root_check = checks.test_the_directory_root_is_root_over_ldapi_without_a_password
    policy_check = checks.test_slapd_checks_new_passwords_against_the_site_policy
    mdb = "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcRootDN\n"
    policy = f"dn: cn=default,ou=policies,{BASE}\nchangetype: modify\nreplace: pwdMinLength\n"
    # slapd itself refuses a root password for root over ldapi (outside the suffix)
    proc = site_lab.mail.exec(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"],
                              input="dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\n"
                                    "replace: olcRootPW\nolcRootPW: {SSHA512}bm90LWEtaGFzaA==\n")
    assert proc.returncode == 80 and \
        "<olcRootPW> can only be set when rootdn is under suffix" in proc.stderr, proc.stderr
    site_lab.ldif(mdb + f"olcRootDN: cn=admin,{BASE}\n")
    site_lab.ldif(policy + "pwdMinLength: 4\n")
    try:
        assert f"has olcRootDN cn=admin,{BASE}, not root over ldapi" in (
            site_lab.host_check(root_check) or "")
        site_lab.ldif("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcRootPW\n"
                      "olcRootPW: {SSHA512}bm90LWEtaGFzaA==\n")
        assert "olcRootPW is set on olcDatabase={1}mdb,cn=config" in (
            site_lab.host_check(root_check) or "")
        assert "'pwdMinLength': '4'" in (site_lab.host_check(policy_check) or "")
    finally:
        site_lab.sh("ldapmodify -Q -Y EXTERNAL -H ldapi:/// <<'EOF' || true\n"
                    "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\ndelete: olcRootPW\n"
                    "EOF")
        site_lab.ldif(mdb + "olcRootDN: gidNumber=0+uidNumber=0,cn=peercred,cn=external,"
                      "cn=auth\n")
        site_lab.ldif(policy + "pwdMinLength: 10\n")
    assert site_lab.host_check(root_check) is None
    assert site_lab.host_check(policy_check) is None


def test_locked_addresses_answer_5_2_1_at_rcpt(site_lab: Lab) -> None:
    got = site_lab.rcpt(GONE, OLD_SHOP, IVAN)
    for port in (25, 587):
        for address in (GONE, OLD_SHOP):
            assert got[f"{port} {address}"] == (f"554 5.2.1 <{address}>: Recipient address "
                                                "rejected: Mailbox disabled"), got
        assert got[f"{port} {IVAN}"] == "250 2.1.5 Ok", got
    checks = site_lab.locked_checks()
    assert checks == {f"port 25: mail to the locked address {a} is refused (5.2.1)": None
                      for a in (GONE, OLD_SHOP)}, checks
    site = load_site(site_lab.site)
    keep = site_lab.sh("postconf -h smtpd_recipient_restrictions "
                       "mailstack_submission_recipient_restrictions").splitlines()
    assert keep == [postfix.main_cf(site, "mail")[p] for p in (
        "smtpd_recipient_restrictions", "mailstack_submission_recipient_restrictions")]
    try:
        # the control: without the locked tables, the locked account receives
        site_lab.sh("postconf -e 'smtpd_recipient_restrictions = reject_unlisted_recipient' "
                    "'mailstack_submission_recipient_restrictions =' && postfix reload")
        time.sleep(1)
        got = site_lab.rcpt(GONE)
        assert got == {f"25 {GONE}": "250 2.1.5 Ok", f"587 {GONE}": "250 2.1.5 Ok"}, got
        checks = site_lab.locked_checks()
        assert "RCPT TO <gone@krasnoyarsk.example.org> answered 250" in (checks[
            f"port 25: mail to the locked address {GONE} is refused (5.2.1)"] or ""), checks
        # ldap.locked_mail: accept (its restrictions): the locked account receives again,
        # a locked alias is still refused
        accept = dataclasses.replace(site, ldap=dataclasses.replace(site.ldap,
                                                                     locked_mail="accept"))
        main = postfix.main_cf(accept, "mail")
        site_lab.sh(f"postconf -e 'smtpd_recipient_restrictions = "
                    f"{main['smtpd_recipient_restrictions']}' "
                    f"'mailstack_submission_recipient_restrictions = "
                    f"{main['mailstack_submission_recipient_restrictions']}' && postfix reload")
        time.sleep(1)
        got = site_lab.rcpt(GONE, OLD_SHOP)
        assert got[f"25 {GONE}"] == got[f"587 {GONE}"] == "250 2.1.5 Ok", got
        assert got[f"25 {OLD_SHOP}"].startswith("554 5.2.1 "), got
    finally:
        site_lab.sh(f"postconf -e 'smtpd_recipient_restrictions = {keep[0]}' "
                    f"'mailstack_submission_recipient_restrictions = {keep[1]}' "
                    "&& postfix reload")
