"""The audit trail, live on the office lab: verify's audit check (a message deleted over IMAP
is logged with user, folder and Message-ID), `mailstack audit` for that user and not another,
the check FAILs without mail_log, and the journal outlives a journald restart on disk.
"""

from __future__ import annotations

import uuid

from mailstack.cli import main
from tests.conftest import live

pytestmark = live(ssh=True, ansible=True)

CHECK = "audit: deleting a message is logged with user, folder and Message-ID"


def audit_check(office_lab) -> object:
    checks = office_lab.checks(["audit"])
    names = [n for n in checks if n.startswith(CHECK)]
    assert len(names) == 1, sorted(checks)
    deleted = [c for n, c in checks.items() if n.startswith("audit: ") and "deletes" in n]
    assert deleted and all(c.ok for c in deleted), deleted
    return checks[names[0]]


def test_audit_check_and_the_audit_verb(office_lab, capsys) -> None:
    check = audit_check(office_lab)
    assert check.ok, check.detail
    user = check.name.rsplit("(", 1)[1].rstrip(")")
    other = next(m for m in office_lab.password if m.lower() != user)
    base = ["audit", str(office_lab.site), "--lab", "-b", str(office_lab.build),
            "--since=-10min"]
    assert main([*base, "--user", user.upper()]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = [line.split("  ") for line in out.splitlines()]
    ours = [f for f in lines if f[3] in ("delete", "expunge") and f[5].startswith("<audit.")]
    assert {f[3] for f in ours} == {"delete", "expunge"}, out
    assert all(f[1] == "mail" and f[2] == "imap" and f[4] == "INBOX" for f in ours), out
    assert main([*base, "--user", other]) == 0
    out_other, _ = capsys.readouterr()
    assert "<audit." not in out_other, out_other


def test_without_mail_log_the_check_fails(office_lab) -> None:
    conf = "/etc/dovecot/dovecot.conf"
    office_lab.sh(f"sed -i 's/ mail_log notify$//' {conf} && systemctl reload dovecot")
    try:
        assert "mail_log" not in office_lab.sh(f"grep '^mail_plugins' {conf}")
        check = audit_check(office_lab)
        assert not check.ok
        assert "no delete and no expunge line" in check.detail, check.detail
    finally:
        office_lab.apply()
    assert audit_check(office_lab).ok


def test_the_journal_outlives_a_journald_restart(office_lab) -> None:
    token = f"mailstack-audit-test-{uuid.uuid4().hex}"
    office_lab.sh(f"logger -t mailstack-test {token} && journalctl --sync")
    office_lab.sh("systemctl restart systemd-journald")
    assert token in office_lab.sh("journalctl -t mailstack-test --no-pager -o cat")
    header = office_lab.sh("journalctl --header --no-pager")
    assert "File path: /var/log/journal/" in header
    assert "Storage" in office_lab.sh("cat /etc/systemd/journald.conf.d/mailstack.conf")
