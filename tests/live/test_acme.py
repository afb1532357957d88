"""tls.mode acme live: the example's lab with its public certificates from the lab's ACME CA
(Debian's pebble, in the lab's client, mailstack.lab.acme), obtained by Debian's certbot.

* the first apply serves the site CA's host certificate until certbot's is there, then
  certbot's deploy hook installs it: every public TLS port (25/587 and 143/110/4190 after
  STARTTLS, 465, 993, 995, 443) serves the certificate of certbot's lineage, which chains to
  pebble's root and names the host (verify's part ``certificates``);
* a second apply changes nothing and asks the CA for nothing (certbot's lineage holds one
  certificate);
* a forced renewal (``certbot renew --force-renewal``, the deploy hook certbot recorded): every
  port serves the new serial at once; certbot.service (the timer's) has the ACME server's CA;
* broken deployment: a deploy hook that does not reload Dovecot leaves IMAP, POP3 and
  ManageSieve on the old serial after a renewal: the check FAILs; the rendered hook puts it
  right;
* last, the same lab moved to tls.mode files: every port serves the admin's chain.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from mailstack import core, lab, secrets, verify
from mailstack.lab import acme as lab_acme
from mailstack.plan import acme, layout
from mailstack.site.load import load_site
from tests.conftest import LabSite, example_lab_site, live

pytestmark = live(ssh=True, ansible=True)

HOSTNAME = "mail.krasnoyarsk.example.org"
SERVER = "https://acme.lab.test:14000/dir"
TLS = f"""
tls:
  mode: acme
  acme:
    server: {SERVER}
    email: postmaster@krasnoyarsk.example.org
    ca_secret: lab/acme-ca
"""
LINEAGE = f"{acme.LIVE_DIR}/{HOSTNAME}"
DOVECOT_PORTS = {993, 143, 995, 110, 4190}
ALL_PORTS = {25, 465, 587, 443} | DOVECOT_PORTS


class AcmeLab(LabSite):
    def serial(self) -> str:
        """The serial of the certificate certbot's lineage holds now (as Python spells it)."""
        out = self.sh(f"openssl x509 -noout -serial -in {LINEAGE}/cert.pem").strip()
        return out.removeprefix("serial=").upper()

    def issued(self) -> int:
        """How many certificates certbot obtained for the host (its archive's cert<N>.pem)."""
        return sum(n.startswith("cert") for n in
                   self.sh(f"ls /etc/letsencrypt/archive/{HOSTNAME}/").split())

    def renew(self) -> None:
        self.sh(f"REQUESTS_CA_BUNDLE={acme.SERVER_CA} certbot renew --force-renewal "
                "--no-random-sleep-on-renew -q")

    def served(self) -> dict[int, str]:
        """Port -> serial each public port serves (verify's probe, trusting pebble's root)."""
        ca = lab_acme.roots(self.state.plan, SERVER)
        site, plan = core.plan(self.site)
        checks = verify.served_checks(site, plan, {}, ca, self.state.client.name, lab=True)
        assert len(checks) == 1
        self.last = checks[0]
        out: dict[int, str] = {}
        if checks[0].ok:
            serial = checks[0].name.rsplit("(serial ", 1)[1].rstrip(")")
            return dict.fromkeys(ALL_PORTS, serial)
        for item in checks[0].detail.split(", "):
            port, _, serial = item.partition(": ")
            out[int(port)] = serial
        return out


@pytest.fixture(scope="module")
def acme_lab(tmp_path_factory) -> Iterator[AcmeLab]:
    root = tmp_path_factory.mktemp("acme")
    site, build = example_lab_site(root, "acme")
    site.write_text(site.read_text(encoding="utf-8") + TLS, encoding="utf-8")
    lab.ensure_outside_secrets(site, build_dir=build)  # lab/acme-ca: the pebble's HTTPS CA
    secrets.generate(load_site(site), root / "secrets")
    try:
        started = time.monotonic()
        lab.up(site, build_dir=build)
        world = AcmeLab(site, build)
        up = time.monotonic()
        world.first = world.apply()
        print(f"\n[acme lab up: {up - started:.0f} s, first apply: {time.monotonic() - up:.0f} s]")
        yield world
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


def test_every_public_port_serves_certbot_s_certificate(acme_lab) -> None:
    assert acme_lab.issued() == 1
    serial = acme_lab.serial()
    assert acme_lab.served() == dict.fromkeys(ALL_PORTS, serial), acme_lab.last.detail
    # verify's own check names pebble's root as the anchor (the probe trusts nothing else)
    # and the host check: certbot's lineage (names, server, hook) is what the ports read
    report = verify.verify(acme_lab.site, lab=True, build_dir=acme_lab.build,
                           parts=[verify.CERT_PART, "port25"], host_keyword="certbot_holds")
    assert {c.name: c.detail for c in report.checks if not c.ok} == {}
    names = {c.name for c in report.checks}
    assert any(n.startswith("certificates:") and "the ACME CA" in n for n in names), names
    assert "host: certbot holds the host s certificate and the ports read it" in names, names
    # the site CA still signs slapd's certificate; the public key is root's, 0600
    assert acme_lab.sh(f"stat -c '%U %a' {layout.public_key('mail')}").strip() == "root 600"


def test_a_second_apply_changes_nothing_and_asks_for_no_certificate(acme_lab) -> None:
    serial = acme_lab.serial()
    again = acme_lab.apply()
    assert again.changed == 0, again.lines()
    assert acme_lab.issued() == 1 and acme_lab.serial() == serial


def test_a_renewal_reaches_every_port(acme_lab) -> None:
    before = acme_lab.serial()
    started = time.monotonic()
    acme_lab.renew()
    after = acme_lab.serial()
    assert after != before
    assert acme_lab.served() == dict.fromkeys(ALL_PORTS, after), acme_lab.last.detail
    print(f"\n[forced renewal and every port on the new serial: "
          f"{time.monotonic() - started:.1f} s]")
    # what the timer runs: certbot.service trusts the ACME server's CA; the hook is recorded
    env = acme_lab.sh("systemctl show -p Environment certbot.service")
    assert f"REQUESTS_CA_BUNDLE={acme.SERVER_CA}" in env
    assert acme_lab.sh("systemctl is-enabled certbot.timer").strip() == "enabled"
    assert f"renew_hook = {acme.HOOK}" in acme_lab.sh(
        f"cat /etc/letsencrypt/renewal/{HOSTNAME}.conf")


def test_a_hook_that_does_not_reload_dovecot_fails_the_check(acme_lab) -> None:
    old = acme_lab.serial()
    acme_lab.sh(f"sed -i '/reload-or-restart dovecot/d' {acme.HOOK}")
    try:
        acme_lab.renew()
        new = acme_lab.serial()
        served = acme_lab.served()
        assert not acme_lab.last.ok
        assert {p for p, s in served.items() if s == old} == DOVECOT_PORTS, served
        assert {p for p, s in served.items() if s == new} == ALL_PORTS - DOVECOT_PORTS, served
    finally:  # the hook as rendered, run as certbot runs it
        rendered = acme_lab.build / load_site(acme_lab.site).site / "mail" / acme.HOOK.lstrip("/")
        acme_lab.mail.put_file(acme.HOOK, rendered.read_text(encoding="utf-8"), 0o755)
        acme_lab.sh(f"RENEWED_LINEAGE={LINEAGE} {acme.HOOK}")
    assert acme_lab.served() == dict.fromkeys(ALL_PORTS, acme_lab.serial()), acme_lab.last.detail


def test_files_mode_serves_the_admins_chain_on_every_port(acme_lab) -> None:
    """Last (it changes the site): the same lab moved to tls.mode files, the chain of a CA
    of the admin's (a leaf and an intermediate): every public port serves it, verify's TLS part
    trusts the root the admin put beside it, and slapd keeps the site CA's certificate."""
    from mailstack import apply as apply_mod
    from mailstack import certs

    root_ca = certs.new_ca("Admin Root CA")
    leaf = certs.issue(root_ca, [HOSTNAME, "autoconfig.krasnoyarsk.example.org",
                                 "autodiscover.krasnoyarsk.example.org"])
    public = acme_lab.site.parent / "secrets" / "tls" / "public"
    public.mkdir(mode=0o700, exist_ok=True)
    for name, text in (("mail.crt", leaf.cert + root_ca.cert), ("mail.key", leaf.key),
                       ("ca.crt", root_ca.cert)):
        (public / name).write_text(text, encoding="utf-8")
        (public / name).chmod(0o600)
    acme_lab.site.write_text(acme_lab.site.read_text(encoding="utf-8").replace(
        TLS, "\ntls: {mode: files}\n"), encoding="utf-8")
    report = apply_mod.apply(acme_lab.site, inventory=acme_lab.state.inventory,
                             build_dir=acme_lab.build, out=lambda line: None)
    assert report.ok, report.lines()
    site, plan = core.plan(acme_lab.site)
    (check,) = verify.served_checks(site, plan, {}, root_ca.cert, acme_lab.state.client.name,
                                    lab=True)
    assert check.ok, check.detail
    served = check.name.rsplit("(serial ", 1)[1].rstrip(")")
    assert int(served, 16) == certs.inspect(leaf.cert).serial, check.name
    tls = verify.verify(acme_lab.site, lab=True, build_dir=acme_lab.build, host_checks=False,
                        parts=["tls"])
    assert [c.name for c in tls.checks if not c.ok] == [], tls.table()
    site_cert = (acme_lab.site.parent / "secrets" / "tls" / "mail.crt").read_text()
    assert acme_lab.sh(f"cat {layout.host_cert('mail')}") == site_cert  # slapd's, internal
