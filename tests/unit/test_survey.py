"""mailstack.mail.survey (plugins/modules/survey.py) without a host: what it reads and decides.

The live proof (a hand-made stack refused, then taken over) is tests/live/test_takeover.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from mailstack import resources
from mailstack.plan import layout

LIBRARY = resources.MODULES
spec = importlib.util.spec_from_file_location("mailstack_survey", LIBRARY / "survey.py")
assert spec and spec.loader
survey = importlib.util.module_from_spec(spec)
sys.modules["mailstack_survey"] = survey
spec.loader.exec_module(survey)

# /proc/net/tcp and tcp6 as the kernel writes them: Postfix's master on 0.0.0.0:25, sshd on
# 0.0.0.0:22, Dovecot on [::]:993, and an established connection to port 25 (not a listener).
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1
   2: 0100007F:9C40 0100007F:0019 01 00000000:00000000 00:00000000 00000000     0        0 1003 1
"""
TCP6 = (
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 00000000000000000000000000000000:03E1 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000     0        0 2001 1\n")


def fake_proc(root: Path, tables: dict[str, str], owners: dict[str, str]) -> Path:
    """A /proc with net/tcp{,6} and one process per socket inode."""
    (root / "net").mkdir(parents=True)
    for name, text in tables.items():
        (root / "net" / name).write_text(text)
    for pid, (inode, comm) in enumerate(owners.items(), start=100):
        (root / str(pid) / "fd").mkdir(parents=True)
        (root / str(pid) / "comm").write_text(comm + "\n")
        (root / str(pid) / "fd" / "3").symlink_to(f"socket:[{inode}]")
    return root


def params(tmp: Path, **over: object) -> dict:
    base = {
        "site": "krasnoyarsk", "host": "mail", "marker": str(tmp / "etc/mailstack/host.json"),
        "ports": list(layout.MAIL_PORTS), "configs": [str(tmp / "etc/postfix"),
                                                     str(tmp / "etc/aliases")],
        "moved": [str(tmp / "etc/ldap/slapd.d")], "spools": [str(tmp / "var/mail"),
                                                             str(tmp / "home/*/Maildir")],
        "queue": str(tmp / "var/spool/postfix"), "backup_dir": str(tmp / "var/backups/mailstack"),
        "take_over": False,
    }
    base.update(over)
    return base


def test_listeners_are_read_from_the_kernels_tables() -> None:
    assert survey.listeners([TCP, TCP6], set(layout.MAIL_PORTS)) == [
        (25, "0.0.0.0", "1001"), (993, "::", "2001")]


def test_a_bare_server_is_bare_and_a_marked_one_is_ours(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {"tcp": TCP.splitlines()[0] + "\n"}, {})
    p = params(tmp_path)
    assert survey.survey(p, proc=str(proc)) == ("bare", [])
    survey.write_marker(p, {})
    marker = json.loads(Path(p["marker"]).read_text())
    assert marker["site"] == "krasnoyarsk" and marker["host"] == "mail"
    assert survey.survey(p, proc=str(proc)) == ("ours", [])
    # another site's marker is a finding, not ours
    assert survey.survey(params(tmp_path, site="other"), proc=str(proc)) == ("foreign", [
        f"marker: {p['marker']} says this host belongs to mailstack site 'krasnoyarsk' "
        "(host 'mail')"])


def test_a_prepared_host_needs_no_take_over(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {"tcp": TCP}, {"1001": "master"})
    p = params(tmp_path)
    Path(p["marker"]).parent.mkdir(parents=True)
    Path(p["marker"]).write_text('{"prepared_by": "mailstack lab image abc"}\n')
    assert survey.survey(p, proc=str(proc)) == ("prepared", [])


def test_a_hand_made_stack_is_listed_listeners_configs_and_mail(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {"tcp": TCP, "tcp6": TCP6},
                     {"1001": "master", "2001": "dovecot"})
    (tmp_path / "etc/postfix").mkdir(parents=True)
    (tmp_path / "etc/postfix/main.cf").write_text("myhostname = x\n")
    (tmp_path / "etc/postfix/master.cf").write_text("")
    (tmp_path / "var/mail").mkdir(parents=True)
    (tmp_path / "var/mail/anna").write_text("From a@b Mon\nSubject: 1\n\nx\nFrom c@d Tue\n\ny\n")
    (tmp_path / "var/mail/empty").write_text("")
    (tmp_path / "home/olga/Maildir/cur").mkdir(parents=True)
    (tmp_path / "home/olga/Maildir/cur/1:2,S").write_text("m")
    (tmp_path / "var/spool/postfix/deferred/A").mkdir(parents=True)
    (tmp_path / "var/spool/postfix/deferred/A/B1").write_text("q")
    state, found = survey.survey(params(tmp_path), proc=str(proc))
    assert state == "foreign"
    assert found == [
        "listening: master on 0.0.0.0 port 25 (smtp)",
        "listening: dovecot on :: port 993 (imaps)",
        f"configuration: {tmp_path}/etc/postfix/ (main.cf, master.cf)",
        f"mail: {tmp_path}/var/mail/anna holds 2 message(s) (mbox)",
        f"mail: {tmp_path}/home/olga/Maildir holds 1 file(s)",
        f"mail: 1 message(s) in Postfix's queue {tmp_path}/var/spool/postfix",
    ]
    assert survey.refusal(params(tmp_path), found).startswith(
        "mail: this host already runs mail that mailstack did not set up; nothing was changed. "
        "Found: listening: master on 0.0.0.0 port 25 (smtp); ")


def test_take_over_copies_configs_moves_slapd_and_leaves_mail(tmp_path: Path) -> None:
    (tmp_path / "etc/postfix").mkdir(parents=True)
    (tmp_path / "etc/postfix/main.cf").write_text("smtpd_banner = by hand\n")
    (tmp_path / "etc/aliases").write_text("root: anna\n")
    (tmp_path / "etc/ldap/slapd.d/cn=config").mkdir(parents=True)
    (tmp_path / "etc/ldap/slapd.d/cn=config.ldif").write_text("dn: cn=config\n")
    (tmp_path / "var/mail").mkdir(parents=True)
    (tmp_path / "var/mail/anna").write_text("From a@b Mon\n\nx\n")
    p = params(tmp_path)
    backup = Path(survey.take_over(p, "20261130T000000Z", stop=None))
    assert backup == tmp_path / "var/backups/mailstack/takeover-20261130T000000Z"
    kept = backup / str(tmp_path).lstrip("/")
    assert (kept / "etc/postfix/main.cf").read_text() == "smtpd_banner = by hand\n"
    assert (kept / "etc/aliases").read_text() == "root: anna\n"
    assert (tmp_path / "etc/postfix/main.cf").exists()  # copied, still in place
    assert (kept / "etc/ldap/slapd.d/cn=config.ldif").exists()
    assert not (tmp_path / "etc/ldap/slapd.d").exists()  # moved: mailstack builds its own
    assert (tmp_path / "var/mail/anna").read_text() == "From a@b Mon\n\nx\n"
    assert not (kept / "var/mail").exists()


@pytest.mark.parametrize("text", ["", "[1, 2]", "{not json"])
def test_an_unreadable_marker_is_a_finding(tmp_path: Path, text: str) -> None:
    proc = fake_proc(tmp_path / "proc", {}, {})
    p = params(tmp_path)
    Path(p["marker"]).parent.mkdir(parents=True)
    Path(p["marker"]).write_text(text)
    state, found = survey.survey(p, proc=str(proc))
    assert state == "foreign" and found[0].startswith(f"marker: {p['marker']} cannot be read: ")
