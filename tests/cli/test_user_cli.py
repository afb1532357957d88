"""`mailstack user`: the exact line of each refusal, its exit code, and nothing changed.

These run without a lab: every refusal here comes before the directory is asked (or from an
SSH that cannot connect). tests/live/test_users.py proves the verbs on a live directory.
"""

from __future__ import annotations

import getpass
import io
import shutil
import sys
from pathlib import Path

import pytest

from mailstack.cli import main

IVAN = "ivan@krasnoyarsk.example.org"


class NoInput(io.StringIO):
    """Standard input that must not be read (no prompt may happen)."""

    def read(self, *_a: object) -> str:
        raise AssertionError("standard input was read")

    readline = read


def run(capsys, monkeypatch, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", NoInput() if stdin is None else io.StringIO(stdin))

    def no_prompt(*_a: object, **_k: object) -> str:
        raise AssertionError("a password prompt appeared")

    monkeypatch.setattr(getpass, "getpass", no_prompt)
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text("all:\n  hosts:\n    mail: {ansible_host: 127.0.0.1}\n")
    return path


@pytest.fixture
def unchanged(example: Path):
    """Asserts afterwards that the site file and the secrets folder are as they were."""
    secrets = example.parent / "secrets"
    before = (example.read_bytes(), sorted(p for p in secrets.rglob("*")))
    yield
    assert (example.read_bytes(), sorted(p for p in secrets.rglob("*"))) == before


def test_self_service_without_a_network_listener_is_one_line_before_any_prompt(
        capsys, monkeypatch, example, inventory, unchanged) -> None:
    code, out, err = run(capsys, monkeypatch, "user", "passwd", "--self", str(example), IVAN,
                         "-i", str(inventory))
    assert (code, out) == (2, "")
    assert err == (f"{example}: the directory listens only on its host's own socket (ldapi); "
                   "`passwd --self` needs `ldap: {network: true}` (port 389, StartTLS "
                   "required); an admin can run `mailstack user passwd` instead\n")


def test_add_refusals_are_check_lines_and_change_nothing(capsys, monkeypatch, example,
                                                        inventory, unchanged) -> None:
    base = ("user", "add", str(example), "-i", str(inventory))
    code, out, err = run(capsys, monkeypatch, *base, IVAN, "--name", "Ivan Again")
    assert (code, out, err) == (2, "", f"{IVAN}: is already an account of {example}; nothing "
                                       "was changed\n")
    code, out, err = run(capsys, monkeypatch, *base, "new@krasnoyarsk.example.org", "--name",
                         "New", "--protocols", "imap,smtp")
    assert (code, out) == (2, "")
    assert err == (f"{example}:60: accounts[3].protocols[1]: expected one of 'imap', 'pop3', "
                   "'submission', 'sieve', got 'smtp'\n")
    code, out, err = run(capsys, monkeypatch, *base, "new@krasnoyarsk.example.org", "--name",
                         "New", "--quota", "2 lorries")
    assert (code, out) == (2, "")
    assert err == (f"{example}:60: accounts[3].quota: '2 lorries' does not match "
                   "^[0-9]+ *([KMGTkmgt]i?[Bb]?)?$\n")
    code, out, err = run(capsys, monkeypatch, *base, "new@krasnoyarsk.example.org", "--name",
                         "New", stdin="short\n")
    assert (code, out, err) == (2, "", "the password is shorter than 10 characters "
                                       "(ldap.password_policy.min_length); nothing was "
                                       "changed\n")


def test_unknown_accounts_are_one_line(capsys, monkeypatch, example, inventory,
                                       unchanged) -> None:
    for action in ("lock", "unlock"):
        code, out, err = run(capsys, monkeypatch, "user", action, str(example),
                             "nobody@krasnoyarsk.example.org", "-i", str(inventory))
        assert (code, out, err) == (2, "", "nobody@krasnoyarsk.example.org: not an account of "
                                           f"{example} (the site file owns the accounts: "
                                           "ldap.accounts is site); nothing was changed\n")


def test_passwords_never_come_from_the_command_line(capsys, monkeypatch, example, inventory,
                                                    tmp_path, unchanged) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(capsys, monkeypatch, "user", "passwd", str(example), IVAN, "-i", str(inventory),
            "--password", "hunter2hunter2")
    assert exit_.value.code == 2
    assert "unrecognized arguments: --password hunter2hunter2" in capsys.readouterr().err
    missing = tmp_path / "nope"
    code, out, err = run(capsys, monkeypatch, "user", "passwd", str(example), IVAN, "-i",
                         str(inventory), "--password-file", str(missing))
    assert (code, out, err) == (2, "", f"{missing}: cannot read the password: No such file or "
                                       "directory\n")


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")
def test_an_unreachable_directory_host_is_one_line(capsys, monkeypatch, example, inventory,
                                                   tmp_path, unchanged) -> None:
    secret = tmp_path / "pw"
    secret.write_text("a-long-new-password\n")
    code, out, err = run(capsys, monkeypatch, "user", "passwd", str(example), IVAN, "-i",
                         str(inventory), "--password-file", str(secret))
    assert (code, out) == (3, "")
    assert err.startswith("mail (127.0.0.1): cannot reach the host over SSH: ")
    assert len(err.splitlines()) == 1 and "a-long-new-password" not in err
    code, out, err = run(capsys, monkeypatch, "user", "lock", str(example), IVAN, "-i",
                         str(inventory))
    assert (code, out) == (3, "")
    assert err.startswith("mail (127.0.0.1): cannot reach the host over SSH: ")
