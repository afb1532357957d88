"""`mailstack init`: flags only, a real terminal (pexpect), refusals with their exact text."""

from __future__ import annotations

import os
import sys

import pexpect
import yaml

from mailstack import core
from mailstack.cli import main
from tests.conftest import ROOT

DOMAIN = "krasnoyarsk.example.org"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_with_flags_only_then_check(capsys, tmp_path) -> None:
    (tmp_path / "pw").write_text("relay-password\n")
    site_dir = tmp_path / "branch"
    code, out, err = run(
        capsys, "init", str(site_dir), "--hostname", f"mail.{DOMAIN}", "--domain", DOMAIN,
        "--relay-mode", "relay", "--relay-host", "smtp.provider.example", "--relay-tls",
        "wrapper", "--relay-user", "shop@provider.example", "--relay-password-file",
        str(tmp_path / "pw"), "--account", f"ivan@{DOMAIN}:Ivan Petrov",
        "--account", f"olga@{DOMAIN}:Olga Sidorova")
    secrets = tmp_path / "branch" / "secrets"
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"wrote {site_dir}/site.yml",
        f"wrote {secrets}/relays/smarthost (the password you gave)",
        *(f"created {secrets}/{name}" for name in (
            "ldap/dovecot", "ldap/postfix", f"accounts/ivan@{DOMAIN}", f"accounts/olga@{DOMAIN}",
            "tls/ca.key", "tls/ca.crt", "tls/mail.key", "tls/mail.crt")),
        f"wrote {site_dir}/inventory.yml (how apply reaches mail.{DOMAIN} over SSH as root: "
        "check it)",
        "next:",
        f"    mailstack check {site_dir}/site.yml",
        f"    mailstack render {site_dir}/site.yml -o build",
        f"    mailstack apply {site_dir}/site.yml -i {site_dir}/inventory.yml",
    ]
    relays = yaml.safe_load((site_dir / "site.yml").read_text())["relays"]
    assert relays == {"smarthost": {"host": "smtp.provider.example", "port": 465,
                                    "tls": "wrapper", "auth": {"user": "shop@provider.example",
                                    "password_secret": "relays/smarthost"}}}
    code, out, err = run(capsys, "check", str(site_dir / "site.yml"))
    assert (code, out, err) == (0, f"{site_dir}/site.yml: ok (2 accounts, 1 hosts)\n", "")


def test_init_refuses_an_existing_site(capsys, tmp_path) -> None:
    (tmp_path / "site.yml").write_text("site: mine\n")
    code, out, err = run(capsys, "init", str(tmp_path), "--hostname", "mail.example.org",
                         "--domain", "example.org", "--account", "ivan@example.org:Ivan")
    assert (code, out) == (2, "")
    assert err == (f"{tmp_path}/site.yml: exists already; init never overwrites a site "
                   "(nothing was written)\n")
    assert (tmp_path / "site.yml").read_text() == "site: mine\n"
    assert [p.name for p in tmp_path.iterdir()] == ["site.yml"]


def test_init_without_a_terminal_names_the_missing_answers(capsys, tmp_path) -> None:
    code, out, err = run(capsys, "init", str(tmp_path / "new"), "--hostname", "mail.example.org")
    assert (code, out) == (2, "")
    assert err == ("init: no answer for --domain, --account and no terminal to ask on: give "
                   "them as flags (mailstack init --help)\n")
    assert not (tmp_path / "new").exists()


def test_init_bad_flag_exact_text(capsys, tmp_path) -> None:
    code, out, err = run(capsys, "init", str(tmp_path / "new"), "--hostname", "mail_server",
                         "--domain", "example.org", "--account", "ivan@example.org:Ivan")
    assert (code, out) == (2, "")
    assert err == ("init: --hostname: 'mail_server' is not a full host name: use a-z, digits, "
                   "dots and hyphens (mail.example.org)\n")
    assert not (tmp_path / "new").exists()


def test_init_in_a_terminal_asks_again_after_a_wrong_answer(tmp_path) -> None:
    """The questions answered through a real pseudo-terminal; a refused host name stays asked."""
    env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm",
           "PYTHONPATH": str(ROOT)}
    child = pexpect.spawn(sys.executable, ["-m", "mailstack.cli", "init", "site"],
                          cwd=str(tmp_path), env=env, encoding="utf-8", timeout=30,
                          dimensions=(40, 120))
    ctrl_u = "\x15"  # clears the answer (prompt_toolkit's emacs keys)

    def answer(question: str, text: str) -> None:
        child.expect_exact(question)
        child.send(text + "\r")

    def yes_no(question: str, key: str) -> None:  # a yes/no question takes one key, no Enter
        child.expect_exact(question)
        child.send(key)

    answer("The server's full host name (mail.example.org):", "mail_server")
    child.expect_exact("'mail_server' is not a full host name: use a-z, digits, dots and "
                       "hyphens (mail.example.org)")
    child.send(ctrl_u + f"mail.{DOMAIN}\r")
    answer("Mail domain(s), separated by spaces:", "")            # the default: krasnoyarsk...
    answer("A short name for the site:", "")                      # krasnoyarsk
    answer("Mail to other domains goes:", "\x1b[B")               # down: through a relay
    answer("The relay server (host name or IP address):", "relay.head-office.example")
    answer("TLS to the relay:", "")                               # verify
    yes_no("Does the relay want a login?", "n")
    answer("The relay's port:", "")                               # 25
    answer("The first account's address:", f"ivan@{DOMAIN}")
    answer(f"ivan@{DOMAIN}: the person's full name:", ctrl_u + "Ivan Petrov")
    answer("An account's address (Enter when done):", f"olga@{DOMAIN}")
    answer(f"olga@{DOMAIN}: the person's full name:", "")          # Olga
    answer("An account's address (Enter when done):", "")
    answer("Who reads postmaster@ and abuse@ of your domains?", "")  # Ivan
    yes_no("Collect a remote mailbox (a provider's POP3/IMAP) into an account?", "y")
    answer("Into which account?", "\x1b[B")                       # olga
    answer("Protocol:", "\x1b[B")                                 # imap
    answer("The provider's server:", "imap.provider.example")
    answer("Login name there:", "olga@provider.example")
    answer("Password of olga@provider.example at imap.provider.example (stored in secrets/):",
           "provider-pw")
    yes_no("Leave the messages at the provider?", "n")
    yes_no("Collect another remote mailbox?", "n")
    child.expect_exact("next:")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    site_file = tmp_path / "site" / "site.yml"
    data = yaml.safe_load(site_file.read_text())
    assert data["hosts"] == {"mail": {"hostname": f"mail.{DOMAIN}",
                                      "roles": ["ldap", "mta", "imap"]}}
    assert data["relays"] == {"smarthost": {"host": "relay.head-office.example", "port": 25,
                                            "tls": "verify"}}
    assert data["accounts"] == [
        {"mail": f"ivan@{DOMAIN}", "name": "Ivan Petrov",
         "aliases": [f"postmaster@{DOMAIN}", f"abuse@{DOMAIN}"]},
        {"mail": f"olga@{DOMAIN}", "name": "Olga"}]
    assert data["fetch"] == [{
        "account": f"olga@{DOMAIN}", "protocol": "imap", "host": "imap.provider.example",
        "user": "olga@provider.example",
        "password_secret": "fetch/imap.provider.example/olga@provider.example", "keep": False}]
    secret = tmp_path / "site/secrets/fetch/imap.provider.example/olga@provider.example"
    assert (secret.read_text(), secret.stat().st_mode & 0o777) == ("provider-pw\n", 0o600)
    report = core.check(site_file)
    assert (report.ok, report.findings) == (True, [])
