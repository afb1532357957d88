"""The whole chain in the lab: lab up -> apply -> verify, idempotence, and broken deployments.

One lab for the module: the example site (under its own site name) is applied once, to a *bare*
host (what a real server from a hosting provider is: no mail stack, apt from a local repository
of Debian's packages; `lab up --start bare`), so the first apply walks the path users take:
packages, debconf, a local-only Postfix, the staged checks. Then it is snapshotted; the first
test proves the whole site with verify and a second apply that changes nothing; every negative
case restores the snapshot, breaks one thing the way an admin would (edit a file, reload), and
shows that the matching verify check FAILs and says why.
"""

from __future__ import annotations

import shutil
import time

import pytest

from mailstack import apply, lab, verify
from mailstack.container import Container
from mailstack.errors import InputError
from tests.conftest import LabSite, example_lab_site, live

pytestmark = live(ssh=True, ansible=True, bare=True)


class Lab(LabSite):
    def verify(self, *parts: str, host: str | None = None) -> dict[str, verify.Check]:
        """The probe parts, and the host checks ``host`` selects (pytest's ``-k``): the whole
        host part takes a minute and a half, which the broken cases need not pay each."""
        report = verify.verify(self.site, lab=True, build_dir=self.build,
                               host_checks=host is not None, host_keyword=host,
                               parts=list(parts))
        return {c.name: c for c in report.checks}

    def restore(self) -> None:
        self.state = lab.restore(self.site, "applied", build_dir=self.build)
        self.mail = Container(self.state.host("mail").name)


@pytest.fixture(scope="module")
def site_lab(tmp_path_factory) -> Lab:
    root = tmp_path_factory.mktemp("e2e")
    site, build = example_lab_site(root, "e2e")
    try:
        started = time.monotonic()
        lab.up(site, build_dir=build, start="bare")
        up = time.monotonic() - started
        report = apply.apply(site, inventory=lab.state(site, build_dir=build).inventory,
                             build_dir=build, out=lambda line: None)
        assert report.ok and report.changed > 0
        changes = report.hosts["mail"].changes
        assert any("the host is mailstack's now (bare)" in c for c in changes), changes
        assert any("Install the missing packages" in c for c in changes), changes
        print(f"\n[bare host: lab up {up:.1f} s, first apply {report.seconds:.1f} s, "
              f"{report.changed} changed]")
        lab.snapshot(site, "applied", build_dir=build)
        yield Lab(site, build)
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


def failed(checks: dict[str, verify.Check]) -> dict[str, str]:
    return {name: c.detail for name, c in checks.items() if not c.ok}


def test_everything_passes_and_a_second_apply_changes_nothing(site_lab: Lab) -> None:
    report = verify.verify(site_lab.site, lab=True, build_dir=site_lab.build)
    assert failed({c.name: c for c in report.checks}) == {}
    names = {c.name for c in report.checks}
    assert "ivan@krasnoyarsk.example.org: IMAP 993, IMAP 143+STARTTLS, POP3 995, POP3 " \
           "110+STARTTLS see the same messages" in names
    assert "host: slapacl answers the acl matrix" in names
    assert len(report.checks) > 60
    again = apply.apply(site_lab.site, inventory=site_lab.state.inventory,
                        build_dir=site_lab.build, out=lambda line: None)
    assert again.changed == 0, again.lines()


def test_delivery_that_writes_where_imap_does_not_read_fails(site_lab: Lab) -> None:
    site_lab.restore()
    site_lab.sh("printf 'protocol lmtp {\\n  mail_location = maildir:~/Elsewhere\\n}\\n' "
                ">> /etc/dovecot/dovecot.conf && doveadm reload")
    bad = failed(site_lab.verify("delivery", host="delivery_and_reading"))
    assert "1 message(s) with subject token" in bad[
        "ivan@krasnoyarsk.example.org: the message lands and is seen over IMAP"]
    assert "'lmtp': 'maildir:~/Elsewhere'" in bad[
        "host: delivery and reading use one mail location"]


def test_an_acl_that_hides_the_directory_from_postfix_fails(site_lab: Lab) -> None:
    site_lab.restore()
    base = "dc=krasnoyarsk,dc=example,dc=org"
    ldif = ("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nadd: olcAccess\n"
            f'olcAccess: {{1}}to dn.subtree="ou=people,{base}" by dn.exact="cn=postfix,'
            f'ou=applications,{base}" none by * break\n')
    proc = site_lab.mail.exec(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"],
                              input=ldif)
    assert proc.returncode == 0, proc.stderr
    bad = failed(site_lab.verify("ldap", host="slapacl"))
    assert "got [], want ['ivan@krasnoyarsk.example.org']" in bad[
        "LDAP: postfix reads what its lookups use"]
    assert "slapacl disagrees with the matrix" in bad["host: slapacl answers the acl matrix"]


def test_slapd_on_the_network_with_a_root_password_fails(site_lab: Lab) -> None:
    """The layout needs only the ldapi socket and no olcRootPW: a slapd that also listens on
    389 and an admin DN with a password are each a FAIL."""
    site_lab.restore()
    # slapd refuses an olcRootPW while the rootDN (root over ldapi) is outside the suffix
    # ("<olcRootPW> can only be set when rootdn is under suffix"): a root password comes
    # with a rootDN under the suffix
    ldif = ("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcRootDN\n"
            "olcRootDN: cn=admin,dc=krasnoyarsk,dc=example,dc=org\n\n"
            "dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\nreplace: olcRootPW\n"
            "olcRootPW: {SSHA512}not-a-real-hash\n")
    proc = site_lab.mail.exec(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"],
                              input=ldif)
    assert proc.returncode == 0, proc.stderr
    site_lab.sh("sed -i 's|^SLAPD_SERVICES=.*|SLAPD_SERVICES=\"ldap:/// ldapi:///\"|' "
                "/etc/default/slapd && systemctl restart slapd")
    bad = failed(site_lab.verify("ldap", host="slapd_listens or directory_root"))
    assert "a TCP connection to port 389 was accepted" in bad[
        "LDAP: port 389 is closed to the network (slapd listens on its ldapi socket only)"]
    assert "slapd listens on [389]; the site needs the ldapi socket only" in bad[
        "host: slapd listens only where the site needs it"]
    assert "olcRootPW is set on olcDatabase={1}mdb,cn=config" in bad[
        "host: the directory root is root over ldapi without a password"]


def test_an_lmtp_socket_open_to_local_users_fails(site_lab: Lab) -> None:
    site_lab.restore()
    site_lab.sh("chmod 0666 /var/spool/postfix/private/dovecot-lmtp")
    bad = failed(site_lab.verify("port25", host="lmtp_socket"))
    assert "is postfix:postfix 0666, not postfix:postfix 0600" in bad[
        "host: only postfix may use the lmtp socket"]


def test_an_open_relay_fails(site_lab: Lab) -> None:
    site_lab.restore()
    site_lab.sh("postconf -e 'mynetworks = 0.0.0.0/0' && postfix reload")
    bad = failed(site_lab.verify("port25"))
    assert "answered 250" in bad[
        "port 25: relaying to verify@relay-check.example.net is refused (no open relay)"]


def test_a_forged_colleague_on_port_25_fails(site_lab: Lab) -> None:
    """The forum main.cf: no smtpd_sender_restrictions, so anyone may send as a colleague."""
    site_lab.restore()
    site_lab.sh("postconf -e 'smtpd_sender_restrictions =' && postfix reload")
    bad = failed(site_lab.verify("port25"))
    forged = next(name for name in bad if name.startswith("port 25: a forged sender"))
    assert "answered 250" in bad[forged]
    assert "answered 250" in bad["port 25: mail as shop@provider.example (an address the site "
                                 "sends as) from outside is refused"]


def test_system_users_as_recipients_fail(site_lab: Lab) -> None:
    """Postfix's default local_recipient_maps: every system user is a recipient from outside."""
    site_lab.restore()
    site_lab.sh("postconf -X local_recipient_maps && postfix reload")
    bad = failed(site_lab.verify("port25"))
    assert "answered 250" in bad[
        "port 25: a system account (nobody@mail.krasnoyarsk.example.org) is not a recipient"]


def test_a_lost_sender_route_fails(site_lab: Lab) -> None:
    site_lab.restore()
    site_lab.sh("postconf -e 'sender_dependent_default_transport_maps =' && postfix reload")
    bad = failed(site_lab.verify("routes"))
    name = ("sender route shop@provider.example: shop@provider.example -> "
            "verify@relay-check.example.net arrives at relay 'provider' and nowhere else")
    assert "seen at ['head-office']" in bad[name]


def test_credentials_offered_to_the_wrong_relay_fail(site_lab: Lab) -> None:
    site_lab.restore()
    # the forum config: one global password map (and plaintext mechanisms allowed), so the
    # provider's password goes to every relay
    site_lab.sh("sed -i 's/^\\(  -o smtp_sasl_auth_enable=\\)no$/\\1yes/' /etc/postfix/master.cf"
                " && sed 's/^\\[smtp.provider.example\\]:465/[192.0.2.1]:25/' "
                "/etc/postfix/relay/provider.sasl > /etc/postfix/leak.sasl"
                " && postconf -e 'smtp_sasl_password_maps = texthash:/etc/postfix/leak.sasl'"
                " 'smtp_sasl_security_options = noanonymous'"
                " && postfix reload")
    bad = failed(site_lab.verify("routes"))
    assert "shop@provider.example" in bad["no credentials were offered to relay 'head-office'"]


def test_a_relay_whose_certificate_is_not_checked_fails(site_lab: Lab) -> None:
    site_lab.restore()
    site_lab.sh("sed -i 's/^\\(  -o smtp_tls_security_level=\\)secure$/\\1may/' "
                "/etc/postfix/master.cf && postfix reload")
    bad = failed(site_lab.verify("bad_certificate"))
    assert "seen at ['head-office']" in bad[
        "relay 'head-office' with a certificate that does not verify is not used (deferred, "
        "nothing sent in clear)"]


def test_wrong_credentials_that_bounce_fail(site_lab: Lab) -> None:
    site_lab.restore()
    site_lab.sh("postconf -e 'smtp_sasl_auth_soft_bounce = no' && postfix reload")
    bad = failed(site_lab.verify("wrong_credentials"))
    assert "queue: not queued" in bad[
        "wrong credentials for relay 'provider': the message is deferred, not bounced, not sent "
        "elsewhere"]


def test_collecting_everything_again_fails(site_lab: Lab) -> None:
    site_lab.restore()
    site_lab.sh("sed -i 's/^read_all = false$/read_all = true/' /etc/mailstack/fetch/*.getmailrc")
    bad = failed(site_lab.verify("fetch"))
    assert "copies per run: [[1, 1], [2, 2], [3, 3]]" in bad[
        "pop3 shop@provider.example at pop.provider.example -> ivan@krasnoyarsk.example.org: an "
        "unread and an already-read message arrive exactly once (three runs, each a new process)"]


def test_verify_against_an_inventory_probes_from_here(site_lab: Lab) -> None:
    """-i INVENTORY: probes run on this machine (outside mynetworks), host checks over SSH;
    read-only unless asked: nothing mailed to the accounts, nothing written to the directory."""
    site_lab.restore()
    count = ("for u in ivan olga probe; do doveadm -f flow mailbox status -u "
             "$u@krasnoyarsk.example.org"
             " messages INBOX; done")
    # the remote mailboxes would deliver what earlier cases left at the provider: empty them,
    # and let one collection run finish, so that only verify could add a message now
    world = lab.stand_ins(site_lab.site, build_dir=site_lab.build)
    for user in ("shop@provider.example", "olga@provider.example"):
        world.clear_provider_mailbox(user)
    site_lab.sh("for t in $(systemctl list-units --plain --no-legend 'mailstack-fetch@*.timer'"
                " | awk '{print $1}'); do systemctl start \"${t%.timer}.service\"; done")
    before = site_lab.sh(count)
    report = verify.verify(site_lab.site, inventory=site_lab.state.inventory,
                           build_dir=site_lab.build, parts=["submission", "port25", "ldap"],
                           host_keyword="services_are_running")
    assert failed({c.name: c for c in report.checks}) == {}
    names = {c.name for c in report.checks}
    assert "port 25: relaying to verify@relay-check.example.net is refused (no open relay)" in names
    assert "host: services are running" in names
    assert not any(n.startswith("wrong credentials") for n in names)  # lab-only checks
    assert not any("may send as" in n or "can write" in n or "cannot write" in n for n in names)
    assert report.notes and report.notes[0].startswith("read-only against real servers")
    assert site_lab.sh(count) == before  # no message reached an account
    people = "ou=people,dc=krasnoyarsk,dc=example,dc=org"
    # user attributes only: the write check's own modify moves modifyTimestamp and entryCSN
    entries = f"ldapsearch -LLL -Q -Y EXTERNAL -H ldapi:/// -o ldif-wrap=no -b {people} '*' | sort"
    directory = site_lab.sh(entries)
    # --allow-writes: only the site's probe account is mailed and written to, and verify
    # removes what it wrote (the probe's INBOX and entry end as they were)
    writes = verify.verify(site_lab.site, inventory=site_lab.state.inventory,
                           build_dir=site_lab.build, parts=["delivery", "submission", "ldap"],
                           host_checks=False, allow_writes=True)
    assert failed({c.name: c for c in writes.checks}) == {}
    names = {c.name for c in writes.checks}
    assert "LDAP: root over ldapi can write (the probe account's entry)" in names
    assert "LDAP: postfix cannot write" in names
    assert "verify removed the messages it sent from the probe account's INBOX" in names
    assert {n for n in names if "lands and is seen" in n} == {
        "probe@krasnoyarsk.example.org: the message lands and is seen over IMAP"}
    assert "587: probe@krasnoyarsk.example.org may send as probe@krasnoyarsk.example.org" in names
    assert not writes.notes
    assert site_lab.sh(count) == before
    assert site_lab.sh(entries) == directory


def test_without_a_probe_account_verify_refuses_to_write(site_lab: Lab, tmp_path) -> None:
    text = site_lab.site.read_text(encoding="utf-8")
    bare = tmp_path / "site.yml"
    bare.write_text(text.replace("verify:\n  probe: probe@krasnoyarsk.example.org\n", ""),
                    encoding="utf-8")
    assert bare.read_text(encoding="utf-8") != text
    shutil.copytree(site_lab.site.parent / "secrets", tmp_path / "secrets")
    with pytest.raises(InputError, match=r"--allow-writes needs the site's probe account"):
        verify.verify(bare, inventory=site_lab.state.inventory, build_dir=tmp_path / "build",
                      parts=["ldap"], host_checks=False, allow_writes=True)


def test_client_settings_naming_a_dead_port_or_without_their_service_fail(site_lab: Lab) -> None:
    site_lab.restore()
    name = ("autoconfig: https://autoconfig.krasnoyarsk.example.org/mail/config-v1.1.xml names "
            "exactly the servers that answer with TLS")
    client = ("a client set up from autoconfig alone logs in over IMAP and sends over submission "
              "(ivan@krasnoyarsk.example.org)")
    good = site_lab.verify("clients")
    assert failed(good) == {} and name in good and client in good, good
    # the served document names 1993 where 993 answers
    site_lab.sh("sed -i 's/^      993,$/      1993,/' /etc/mailstack/clientconf.json && "
                "grep -q 1993 /etc/mailstack/clientconf.json && "
                "systemctl restart mailstack-clientconf && sleep 1")
    bad = failed(site_lab.verify("clients"))
    assert "named but not answering with TLS: [('imap', 'mail.krasnoyarsk.example.org', " \
           "1993, 'SSL')]" in bad[name], bad
    assert "answering with TLS but not named: [('imap', 'mail.krasnoyarsk.example.org', " \
           "993, 'SSL')]" in bad[name], bad
    assert client in bad, bad  # the configured client cannot log in either
    # the service stopped: nginx answers 502, and nothing passes
    site_lab.sh("systemctl stop mailstack-clientconf")
    bad = failed(site_lab.verify("clients", host="nginx"))
    assert bad[name].startswith("HTTP 502"), bad
    assert "nothing listens on 127.0.0.1:8461" in bad[
        "host: nginx serves only the sites checked configuration"], bad


def test_old_tls_or_anonymous_suites_on_any_port_fail(site_lab: Lab) -> None:
    site_lab.restore()
    good = site_lab.verify("tls", "old_tls_control")
    assert failed(good) == {} and len(good) == 9 * 3 + 2, sorted(good)
    # port 25 offers anonymous suites (its opportunistic TLS on Postfix's "low" list, which
    # OpenSSL 3 lets have them at @SECLEVEL=0) and the client settings' nginx speaks TLS 1.0
    # and 1.1; 465 and 587 keep their mandatory lists
    site_lab.sh("postconf -e 'smtpd_tls_exclude_ciphers =' 'smtpd_tls_ciphers = low' "
                "'tls_low_cipherlist = aNULL:ALL:@SECLEVEL=0' && postfix reload && "
                "sed -i 's/ssl_protocols TLSv1.2 TLSv1.3;/ssl_protocols TLSv1 TLSv1.1 TLSv1.2; "
                "ssl_ciphers DEFAULT:@SECLEVEL=0;/' /etc/nginx/conf.d/mailstack-clients.conf && "
                "nginx -t -q && systemctl reload nginx && sleep 1")
    bad = failed(site_lab.verify("tls"))
    assert set(bad) == {"SMTP 25: anonymous and NULL cipher suites refused",
                        "HTTPS 443: TLS 1.0 and 1.1 refused"}, bad
    assert "handshake succeeded: TLSv1.2 ADH-" in bad[
        "SMTP 25: anonymous and NULL cipher suites refused"]
    assert "handshake succeeded: TLSv1.1" in bad["HTTPS 443: TLS 1.0 and 1.1 refused"]
