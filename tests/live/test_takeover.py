"""apply on a server that already runs a mail stack set up by hand (`lab up --start handmade`).

The host: Debian's Postfix as "Internet Site" with a hand edit in main.cf, Dovecot with its stock
conf.d, and a local user's mail in /var/mail. apply must stop before changing anything and list
what it found; with take_over it keeps a dated copy of the old configurations, applies, and
leaves the existing mail where it was. The tests run in order on one lab.
"""

from __future__ import annotations

import shutil

import pytest

from mailstack import apply, lab, verify
from mailstack.lab import handmade
from mailstack.plan import layout
from tests.conftest import LabSite, example_lab_site, live

pytestmark = live(ssh=True, ansible=True)

STATE = f"md5sum /etc/postfix/main.cf /etc/dovecot/dovecot.conf {handmade.MBOX}; ls /etc/dovecot/conf.d; " \
        f"ls -d {layout.HOST_MARKER} {layout.VMAIL_DIR} {layout.TAKEOVER_BACKUP_DIR} 2>&1 | sort"


class Handmade(LabSite):
    def apply(self, **kw: object) -> apply.ApplyReport:
        return apply.apply(self.site, inventory=self.state.inventory, build_dir=self.build,
                           out=lambda line: None, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Handmade:
    root = tmp_path_factory.mktemp("takeover")
    site, build = example_lab_site(root, "take")
    try:
        lab.up(site, build_dir=build, start="handmade")
        yield Handmade(site, build)
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


def test_apply_stops_before_changing_anything_and_lists_what_it_found(server: Handmade) -> None:
    before = server.sh(STATE)
    assert "No such file" in before  # no marker, no /var/vmail, no backups yet
    with pytest.raises(apply.ApplyFailed) as caught:
        server.apply()
    last = str(caught.value).splitlines()[-1]
    assert last.startswith("mail: mailstack.mail.base: Survey a host mailstack has not applied "
                           "before, and refuse to overwrite a stack set up by hand: mail: this "
                           "host already runs mail that mailstack did not set up; nothing was "
                           "changed. Found: "), last
    for found in ("listening: master on 0.0.0.0 port 25 (smtp)",
                  "listening: dovecot on 0.0.0.0 port 143 (imap)",
                  "configuration: /etc/postfix/ (",
                  "configuration: /etc/dovecot/ (",
                  f"mail: {handmade.MBOX} holds 1 message(s) (mbox)",
                  "Re-run with --take-over"):
        assert found in last, found
    assert server.sh(STATE) == before
    assert handmade.BANNER in server.sh("postconf -h smtpd_banner")


def test_take_over_keeps_the_old_configs_and_the_mail_and_applies(server: Handmade) -> None:
    mail_before = server.sh(f"md5sum {handmade.MBOX}")
    report = server.apply(take_over=True)
    assert report.ok and report.changed > 0
    changes = report.hosts["mail"].changes
    assert any("took over: listening: master on 0.0.0.0 port 25" in c for c in changes), changes
    backup = server.sh(f"ls -d {layout.TAKEOVER_BACKUP_DIR}/takeover-*").split()
    assert len(backup) == 1
    kept = backup[0]
    assert handmade.BANNER in server.sh(f"cat {kept}/etc/postfix/main.cf")
    assert server.sh(f"ls {kept}/etc/dovecot/conf.d").split()  # the stock conf.d, copied
    # the mail stays where it was, untouched
    assert server.sh(f"md5sum {handmade.MBOX}") == mail_before
    assert handmade.SUBJECT in server.sh(f"cat {handmade.MBOX}")
    # the live configuration is mailstack's, and the host is marked as the site's
    assert server.sh("head -n 1 /etc/postfix/main.cf").startswith("# Postfix main.cf, rendered "
                                                                  "by mailstack")
    marker = server.sh(f"cat {layout.HOST_MARKER}")
    assert f'"site": "{server.state.site}"' in marker and f'"taken_over": "{kept}"' in marker


def test_the_taken_over_host_delivers_and_is_the_sites_from_now_on(server: Handmade) -> None:
    report = verify.verify(server.site, lab=True, build_dir=server.build, host_checks=False,
                           parts=["delivery"])
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert report.checks and failed == {}
    again = server.apply()  # no take_over: the host is the site's now
    assert again.ok and again.changed == 0, again.lines()
