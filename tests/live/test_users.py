"""`mailstack user` on a live directory: the office lab (the example site with
`ldap.network: true`; tests/live/conftest.py).

The user commands run here, on the host machine, as an admin runs them (`--lab`: SSH to the
directory's host, ldapi as root there; `passwd --self`: StartTLS to port 389 with the site CA).
Logins are real IMAPS (993) and submission (587, STARTTLS, AUTH PLAIN) sessions from here;
the stored password is read back with slapcat. Controls: a wrong password is refused, the old
password after a change is refused, another user cannot change the password.
"""

from __future__ import annotations

import base64
import imaplib
import io
import shutil
import smtplib
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
import yaml

from mailstack import certs, secrets
from mailstack.cli import main
from mailstack.plan import dit, layout
from mailstack.site.load import load_site
from tests.conftest import LabSite, live
from tests.live.conftest import Office

pytestmark = live(ssh=True, ansible=True)

NEW = "nina@krasnoyarsk.example.org"
OLGA = "olga@krasnoyarsk.example.org"
FIRST, SECOND = "Nina-first-pass-1", "Nina-second-pass-2"


class Lab(LabSite):
    def __init__(self, site: Path, build: Path) -> None:
        super().__init__(site, build)
        self.ip = self.state.host("mail").ip
        self.secrets = site.parent / "secrets"
        self.ca = (self.secrets / layout.SECRET_CA_CERT).read_text()
        self.model = load_site(site)

    def user(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        """`mailstack user ...` as the admin types it; (exit code, stdout, stderr)."""
        old_in, old_out, old_err = sys.stdin, sys.stdout, sys.stderr
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), io.StringIO(), io.StringIO()
        try:
            code = main(["user", argv[0], str(self.site), *argv[1:], "--lab",
                         "-b", str(self.build)])
            return code, sys.stdout.getvalue(), sys.stderr.getvalue()
        finally:
            sys.stdin, sys.stdout, sys.stderr = old_in, old_out, old_err

    def ctx(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca)
        ctx.check_hostname = False  # reached by its lab address; the chain is still checked
        return ctx

    def imap(self, user: str, password: str) -> str:
        try:
            c = imaplib.IMAP4_SSL(self.ip, layout.IMAPS_PORT, ssl_context=self.ctx(), timeout=20)
        except OSError as err:
            return f"no connection: {err}"
        try:
            c.login(user, password)
            return "ok"
        except imaplib.IMAP4.error as err:
            return f"refused: {err}"
        finally:
            c.shutdown()

    def submission(self, user: str, password: str) -> str:
        with smtplib.SMTP(self.ip, layout.SUBMISSION_PORT, timeout=20) as s:
            s.ehlo("client.users.lab")
            s.starttls(context=self.ctx())
            s.ehlo("client.users.lab")
            try:
                s.login(user, password)
                return "ok"
            except smtplib.SMTPAuthenticationError as err:
                return f"refused: {err.smtp_code}"

    def logins(self, user: str, password: str) -> tuple[str, str]:
        return self.imap(user, password), self.submission(user, password)

    def stored(self, mail: str) -> str:
        """The userPassword slapd stores for ``mail`` (slapcat on the host)."""
        out = self.sh(f"slapcat -a '(mail={mail})'")
        for line in out.replace("\n ", "").splitlines():
            if line.startswith("userPassword:: "):
                return base64.b64decode(line.split(" ", 1)[1]).decode("utf-8", "replace")
            if line.startswith("userPassword: "):
                return line.split(" ", 1)[1]
        return ""

    def show(self, mail: str) -> dict[str, str]:
        code, out, err = self.user("show", mail)
        assert code == 0, err
        return dict(line.split(": ", 1) for line in out.splitlines())


@pytest.fixture(scope="module")
def users_lab(office_lab: Office) -> Iterator[Lab]:
    # the office lab (tests/live/conftest.py) serves 389 with StartTLS: passwd --self binds
    # there; the site file goes back and an apply locks the accounts the tests added, so a
    # module that runs after this one on the same lab finds only the site's accounts
    text = office_lab.site.read_text()
    try:
        yield Lab(office_lab.site, office_lab.build)
    finally:
        office_lab.site.write_text(text)
        office_lab.apply()


def test_user_add_logs_in_within_seconds_and_a_second_apply_keeps_him(users_lab: Lab) -> None:
    before = users_lab.site.read_text()
    code, out, err = users_lab.user("add", NEW, "--name", "Nina Orlova", "--quota", "2G",
                                    stdin=FIRST + "\n")
    added = time.monotonic()
    assert (code, err) == (0, ""), err
    assert FIRST not in out
    assert out.splitlines()[0] == (f"{NEW}: added to the directory "
                                   f"({dit.account_dn(users_lab.model, NEW)}); its password "
                                   "is set")
    while users_lab.logins(NEW, FIRST) != ("ok", "ok") and time.monotonic() - added < 10:
        time.sleep(0.5)
    assert users_lab.logins(NEW, FIRST) == ("ok", "ok")
    print(f"\n[logged in over IMAPS and submission {time.monotonic() - added:.1f} s after add]")
    assert users_lab.logins(NEW, "not-the-password") == (
        "refused: b'[AUTHENTICATIONFAILED] Authentication failed.'", "refused: 535")  # control
    # the site file has him (one item more, nothing else changed), the secret is 0600
    after = users_lab.site.read_text()
    assert after.replace("  - mail: nina@krasnoyarsk.example.org\n    name: Nina Orlova\n"
                         "    quota: 2G\n", "", 1) == before
    secret = users_lab.secrets / layout.secret_account(NEW)
    assert secret.read_text() == FIRST + "\n" and secret.stat().st_mode & 0o777 == 0o600
    assert users_lab.show(NEW)["origin"] == dit.ORIGIN_CLI
    users_lab.apply()
    assert users_lab.logins(NEW, FIRST) == ("ok", "ok")
    shown = users_lab.show(NEW)
    assert (shown["state"], shown["quota"], shown["in the site file"]) == ("active", "2G", "yes")
    assert shown["password"] == "{ARGON2}"


def test_passwd_self_changes_it_at_once_and_nobody_else_can(users_lab: Lab) -> None:
    code, out, err = users_lab.user("passwd", NEW, "--self", stdin=f"{FIRST}\n{SECOND}\n")
    assert (code, out, err) == (0, f"{NEW}: password changed\n", "")
    assert users_lab.logins(NEW, SECOND) == ("ok", "ok")
    assert users_lab.logins(NEW, FIRST) == (
        "refused: b'[AUTHENTICATIONFAILED] Authentication failed.'", "refused: 535")
    assert users_lab.stored(NEW).startswith("{ARGON2}")
    # a wrong old password: one line, nothing changed
    code, out, err = users_lab.user("passwd", NEW, "--self", stdin=f"{FIRST}\nThird-pass-333\n")
    assert (code, out, err) == (2, "", f"{NEW}: the old password is wrong (or there is no such "
                                       "account); nothing was changed\n")
    # control: a directory the site CA did not certify gets no password
    elsewhere = users_lab.site.parent / "secrets-other-ca"
    shutil.copytree(users_lab.secrets, elsewhere)
    (elsewhere / layout.SECRET_CA_CERT).write_text(certs.new_ca("someone else's CA").cert)
    code, out, err = users_lab.user("passwd", NEW, "--self", "--secrets", str(elsewhere),
                                    stdin=f"{SECOND}\nThird-pass-333\n")
    assert (code, out) == (3, ""), err
    assert err.startswith(f"the directory at mail.krasnoyarsk.example.org ({users_lab.ip}:389): "
                          "TLS failed: the server is not the one the site CA certified ("), err
    assert err.endswith("); nothing was changed\n") and len(err.splitlines()) == 1
    assert SECOND not in err and "Third-pass" not in err
    # another user, bound as herself over StartTLS, cannot change it
    olga_pw = secrets.SecretStore(users_lab.secrets).read(layout.account_secret(
        next(a for a in users_lab.model.accounts if a.mail == OLGA)))
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_data=users_lab.ca,
                    valid_names=[users_lab.model.hosts["mail"].hostname])
    conn = ldap3.Connection(ldap3.Server(users_lab.ip, port=layout.LDAP_PORT, tls=tls,
                                         get_info=ldap3.NONE),  # see users.passwd_self
                            user=str(dit.account_dn(users_lab.model, OLGA)), password=olga_pw,
                            raise_exceptions=False)
    conn.open()
    assert conn.start_tls(read_server_info=False) and conn.bind(), conn.result
    conn.extend.standard.modify_password(str(dit.account_dn(users_lab.model, NEW)), None,
                                         "Olga-took-it-over")
    assert conn.result["description"] == "insufficientAccessRights", conn.result
    conn.unbind()
    assert users_lab.logins(NEW, SECOND) == ("ok", "ok")


def test_slapd_stopped_is_one_line_and_changes_nothing(users_lab: Lab) -> None:
    site_before = users_lab.site.read_bytes()
    secrets_before = sorted(users_lab.secrets.rglob("*"))
    down = (f"mail ({users_lab.ip}): the directory does not answer on {layout.LDAPI_SOCKET} "
            "(is slapd running? `systemctl status slapd` there); nothing was changed\n")
    users_lab.sh("systemctl stop slapd")
    try:
        assert users_lab.user("passwd", NEW, stdin="Admin-set-pass-4\n") == (3, "", down)
        assert users_lab.user("add", "late@krasnoyarsk.example.org", "--name", "Late Comer",
                              stdin="Late-comer-pass-5\n") == (3, "", down)
        assert users_lab.user("lock", NEW) == (3, "", down)
        code, out, err = users_lab.user("passwd", NEW, "--self", stdin=f"{SECOND}\nX-pass-6666\n")
        assert (code, out) == (3, "")
        assert err == (f"the directory at mail.krasnoyarsk.example.org ({users_lab.ip}:389): "
                       "connection refused (is slapd running and listening on the network?); "
                       "nothing was changed\n")
    finally:
        users_lab.sh("systemctl start slapd")
    assert users_lab.site.read_bytes() == site_before
    assert sorted(users_lab.secrets.rglob("*")) == secrets_before
    assert users_lab.logins(NEW, SECOND) == ("ok", "ok")


def test_lock_is_in_the_site_file_and_the_directory(users_lab: Lab) -> None:
    code, out, err = users_lab.user("lock", NEW)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == (f"{NEW}: locked (every login is refused; mail to it is "
                                   "refused (5.2.1))")
    assert "    quota: 2G\n    enabled: false\n" in users_lab.site.read_text()
    assert users_lab.show(NEW)["state"] == "locked"
    assert f"{dit.LOCKED}: TRUE" in users_lab.sh(f"slapcat -a '(mail={NEW})'")
    # Dovecot refuses a locked account (its deny passdb: branch `dove`)
    assert users_lab.logins(NEW, SECOND) == (
        "refused: b'[AUTHENTICATIONFAILED] Authentication failed.'", "refused: 535")


def test_unlock_lets_him_back(users_lab: Lab) -> None:
    code, out, err = users_lab.user("unlock", NEW)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"{NEW}: unlocked (it may log in again)"
    assert "enabled:" not in users_lab.site.read_text()
    assert users_lab.show(NEW)["state"] == "active"
    assert users_lab.logins(NEW, SECOND) == ("ok", "ok")


def test_set_protocols_and_quota_in_the_site_file_and_the_directory(users_lab: Lab) -> None:
    code, out, err = users_lab.user("set", NEW, "--protocols", "imap", "--quota", "1G")
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"{NEW}: changed in the directory: disabled services "
                                "pop3,sieve,smtp; quota 1G", f"{users_lab.site}: {NEW} changed"]
    assert "    quota: 1G\n    protocols: [imap]\n" in users_lab.site.read_text()
    shown = users_lab.show(NEW)
    assert (shown["disabled services"], shown["quota"]) == ("pop3,sieve,smtp", "1G")
    try:
        # IMAP still works; submission is refused (Dovecot's deny passdb: branch `dove`)
        assert users_lab.logins(NEW, SECOND) == ("ok", "refused: 535")
    finally:
        code, out, err = users_lab.user("set", NEW, "--protocols", "imap,pop3,submission,sieve",
                                        "--quota", "2G")
        assert (code, err) == (0, "")
        mine = [a for a in yaml.safe_load(users_lab.site.read_text())["accounts"]
                if a["mail"] == NEW]
        assert len(mine) == 1 and "protocols" not in mine[0], mine
        assert users_lab.show(NEW)["disabled services"] == "-"


def test_directory_mode_leaves_the_site_file_alone(users_lab: Lab) -> None:
    text = users_lab.site.read_text()
    directory = text.replace("  loglevel: [stats]\n", "  loglevel: [stats]\n"
                             "  accounts: directory\n", 1)
    users_lab.site.write_text(directory)
    try:
        code, _out, err = users_lab.user("add", "dana@krasnoyarsk.example.org", "--name",
                                        "Dana Ivanova", stdin="Dana-pass-12345\n")
        assert (code, err) == (0, "")
        assert users_lab.site.read_text() == directory
        assert not (users_lab.secrets / "accounts/dana@krasnoyarsk.example.org").exists()
        assert users_lab.logins("dana@krasnoyarsk.example.org", "Dana-pass-12345") == ("ok",
                                                                                       "ok")
        assert users_lab.show("dana@krasnoyarsk.example.org")["in the site file"] == "no"
    finally:
        users_lab.site.write_text(text)


def test_remove_locks_then_prune_deletes_and_the_mailbox_stays(users_lab: Lab) -> None:
    home = dit.mail_home(NEW)
    users_lab.sh(f"doveadm mailbox status -u {NEW} messages INBOX")  # the mailbox exists
    code, out, err = users_lab.user("remove", NEW)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{NEW}: locked in the directory (entry kept; --prune deletes it)",
        f"{NEW}: the mailbox stays at mail:{home} (apply --prune moves it to a dated archive "
        "folder)",
        f"{users_lab.site}: {NEW} removed from accounts:",
        f"{users_lab.secrets / layout.secret_account(NEW)}: removed (the site needs it no "
        "more)"]
    assert NEW not in users_lab.site.read_text()
    assert users_lab.show(NEW)["state"] == "locked"
    code, out, err = users_lab.user("remove", NEW, "--prune")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"{NEW}: entry deleted from the directory"
    assert NEW not in users_lab.user("list")[1]
    assert users_lab.sh(f"test -d {home} && echo kept").strip() == "kept"
    assert users_lab.user("show", NEW) == (
        2, "", f"{NEW}: no such account in the directory ({dit.account_dn(users_lab.model, NEW)})"
               "\n")
