"""`mailstack user` without a lab: what goes over SSH (the password on stdin only), what the
directory's answers become, the listing's table."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from mailstack import users
from mailstack.errors import InputError, ToolError
from mailstack.site.load import load_site

IVAN = "ivan@krasnoyarsk.example.org"
PASSWORD = "a-long-new-password"


@pytest.fixture
def where(tmp_path: Path) -> users.Where:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    mail: {ansible_host: 192.0.2.9, "
                         "ansible_user: admin}\n")
    return users.Where(inventory=inventory)


def fake_ssh(monkeypatch, *answers: dict) -> list[tuple[list[str], dict]]:
    """subprocess.run answering each SSH call with the next answer; the calls made."""
    calls: list[tuple[list[str], dict]] = []
    queue = list(answers)

    def run(argv, input="", **_kw):  # subprocess.run's own names
        job = json.loads(input.split("\n", 1)[0])
        calls.append((argv, job))
        assert input.split("\n", 1)[1] == users.HOST_SCRIPT.read_text()
        return subprocess.CompletedProcess(argv, 0, json.dumps(queue.pop(0)) + "\n", "")

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def test_the_password_travels_on_stdin_only_and_dovecot_forgets_the_user(
        monkeypatch, example, where) -> None:
    calls = fake_ssh(monkeypatch, {"ok": True, "flush_error": ""})
    result = users.passwd(example, IVAN, lambda: PASSWORD, where=where)
    assert (result.lines, result.warnings) == ([f"{IVAN}: password changed"], [])
    ((argv, job),) = calls  # the directory's host runs Dovecot too: one SSH session
    assert argv[-2:] == ["admin@192.0.2.9", "sudo -n python3 -c " + shlex.quote(
        users.BOOTSTRAP)]
    assert not any(PASSWORD in a for a in argv)
    assert job == {"op": "passwd", "socket": "/run/slapd/ldapi", "password": PASSWORD,
                   "base": "dc=krasnoyarsk,dc=example,dc=org",
                   "dn": "mail=ivan@krasnoyarsk.example.org,ou=people,dc=krasnoyarsk,"
                         "dc=example,dc=org", "flush": [IVAN]}


def test_the_directory_answers_become_one_line(monkeypatch, example, where) -> None:
    dn = "mail=ivan@krasnoyarsk.example.org,ou=people,dc=krasnoyarsk,dc=example,dc=org"
    cases = [
        ({"error": "down"}, ToolError, "mail (192.0.2.9): the directory does not answer on "
         "/run/slapd/ldapi (is slapd running? `systemctl status slapd` there); nothing was "
         "changed"),
        ({"error": "unknown"}, InputError, f"{IVAN}: no such account in the directory ({dn})"),
        ({"error": "refused", "message": "the directory refused the new password: "
          "constraintViolation: Password fails quality checking policy"}, InputError,
         f"{IVAN}: the directory refused the new password: constraintViolation: Password "
         "fails quality checking policy; nothing was changed"),
    ]
    for answer, kind, text in cases:
        fake_ssh(monkeypatch, {"ok": False, "message": "", **answer})
        with pytest.raises(kind) as err:
            users.passwd(example, IVAN, lambda: PASSWORD, where=where)
        assert str(err.value) == text


def test_a_failed_flush_is_a_warning_the_change_is_done(monkeypatch, example, where) -> None:
    fake_ssh(monkeypatch, {"ok": True, "changed": True,
                           "flush_error": "doveadm auth cache flush failed (exit 75): "
                                          "Error: connect(/run/dovecot/auth-master) failed"})
    result = users.set_locked(example, IVAN, True, where=where)
    assert result.lines[0] == f"{IVAN}: locked (every login is refused; mail to it is refused " \
                              "(5.2.1))"
    assert result.warnings == [
        "mail: doveadm auth cache flush failed (exit 75): Error: connect(/run/dovecot/"
        "auth-master) failed; Dovecot may accept the old state of this account until its "
        "cache entry expires"]
    assert "    enabled: false\n" in example.read_text()


def test_a_locked_directory_write_leaves_the_site_file_as_it_was(monkeypatch, example,
                                                                 where) -> None:
    before = example.read_bytes()
    fake_ssh(monkeypatch, {"ok": False, "error": "down", "message": ""})
    with pytest.raises(ToolError):
        users.set_locked(example, IVAN, True, where=where)
    assert example.read_bytes() == before


def test_passwords_shorter_than_the_policy_are_refused_before_anything_is_sent(
        example) -> None:
    site = load_site(example)
    assert users.check_password(site, "0123456789") == "0123456789"
    for bad, text in (("", "the password is empty"),
                      ("012345678", "the password is shorter than 10 characters "
                                    "(ldap.password_policy.min_length)"),
                      ("0123456789\nx", "the password holds a line break or NUL")):
        with pytest.raises(InputError) as err:
            users.check_password(site, bad)
        assert str(err.value) == f"{text}; nothing was changed"


def test_the_listing_table() -> None:
    rows = [users._state({"mail": ["b@x.org"], "mailstackLocked": ["TRUE"],
                          "mailstackDisabledService": ["smtp", "pop3"],
                          "mailstackQuota": [str(2 << 30)], "mailstackOrigin": ["cli"]}),
            users._state({"mail": ["a@x.org"], "mailstackQuota": ["1000"]})]
    assert users.table(rows) == (
        "mail     state   disabled   quota  origin\n"
        "b@x.org  locked  pop3,smtp  2G     cli\n"
        "a@x.org  active  -          1000   -")
    assert users.table([]) == "no accounts in the directory"


def test_set_changes_the_site_file_and_replaces_what_it_owns(monkeypatch, example,
                                                            where) -> None:
    calls = fake_ssh(monkeypatch, {"ok": True, "changed": True, "flush_error": "", "entry": {
        "mail": [IVAN], "mailstackDisabledService": ["pop3", "smtp", "sieve"],
        "mailstackQuota": [str(2 << 30)]}})
    result = users.set_account(example, IVAN, protocols=["imap"], quota="2G", where=where)
    assert result.lines == [f"{IVAN}: changed in the directory: disabled services "
                            "pop3,sieve,smtp; quota 2G", f"{example}: {IVAN} changed"]
    assert calls[0][1]["replace"] == {"mailstackDisabledService": ["pop3", "smtp", "sieve"],
                                      "mailstackQuota": [str(2 << 30)]}
    assert calls[0][1]["flush"] == [IVAN]
    assert "    send_as: [shop@provider.example]\n    protocols: [imap]\n    quota: 2G\n" \
        in example.read_text()
    with pytest.raises(InputError) as err:
        users.set_account(example, IVAN, where=where)
    assert str(err.value) == "nothing to change: give --protocols, --quota or both"
