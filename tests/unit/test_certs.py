"""Host certificates: `check` warns 30 days before one expires and refuses an expired one;
`mailstack secrets --renew` renews the due ones from the site CA, keeping their keys."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from mailstack import certs, checks, secrets
from mailstack.errors import InputError
from mailstack.site.load import load_site

DAY = datetime.timedelta(days=1)


EXAMPLE_NAMES = ("mail.krasnoyarsk.example.org", "autoconfig.krasnoyarsk.example.org",
                 "autodiscover.krasnoyarsk.example.org")
"""The example host's certificate names (it serves client settings: plan/web.py)."""


def reissue(secrets_dir: Path, *, days: int, back: int = 0, names: tuple[str, ...] =
        EXAMPLE_NAMES, ca: certs.KeyPair | None = None) -> str:
    """Replace the host's certificate with one of the site CA (same key) that was issued
    ``back`` days ago and is valid for ``days`` days; return its PEM."""
    ca = ca or certs.KeyPair((secrets_dir / "tls/ca.crt").read_text(),
                             (secrets_dir / "tls/ca.key").read_text())
    key = (secrets_dir / "tls/mail.key").read_text()
    now = datetime.datetime.now(datetime.UTC) - back * DAY
    pair = certs.issue(ca, list(names), client=True, key=key, days=days, now=now)
    (secrets_dir / "tls/mail.crt").write_text(pair.cert)
    return pair.cert


def findings(site_file: Path) -> list[str]:
    return [str(f) for f in checks.run(load_site(site_file),
                                       secrets.SecretStore(site_file.parent / "secrets"))]


def test_the_fixture_certificate_is_far_from_due(example: Path) -> None:
    assert findings(example) == []


def test_check_warns_within_30_days_and_refuses_an_expired_one(example: Path) -> None:
    sec = example.parent / "secrets"
    pem = reissue(sec, days=10, back=0)
    when = certs.inspect(pem).not_after.strftime("%Y-%m-%d %H:%M UTC")
    got = checks.run(load_site(example), secrets.SecretStore(sec))
    assert [(f.severity, str(f)) for f in got] == [(
        "warning", f"{example}:8: hosts.mail: warning: {sec}/tls/mail.crt: the certificate "
                   f"expires on {when}, in 9 days; `mailstack secrets SITE --renew` renews it")]
    pem = reissue(sec, days=31, back=0)
    assert findings(example) == []
    pem = reissue(sec, days=10, back=12)
    when = certs.inspect(pem).not_after.strftime("%Y-%m-%d %H:%M UTC")
    got = checks.run(load_site(example), secrets.SecretStore(sec))
    assert [(f.severity, str(f)) for f in got] == [(
        "error", f"{example}:8: hosts.mail: {sec}/tls/mail.crt: the certificate expired on "
                 f"{when}; `mailstack secrets SITE --renew` renews it")]
    (sec / "tls/mail.crt").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    assert findings(example) == [
        f"{example}:8: hosts.mail: {sec}/tls/mail.crt: host certificate 'tls/mail.crt' is not "
        "a PEM certificate"]


def _public_chain(sec: Path, *, days: int = 90, names: tuple[str, ...] = EXAMPLE_NAMES,
                  key: str | None = None) -> certs.KeyPair:
    """tls.mode files: the admin's chain from a CA of his own choosing (not the site CA)."""
    issuer = certs.new_ca("Some Commercial CA")
    leaf = certs.issue(issuer, list(names), days=days, key=key)
    (sec / "tls/public").mkdir(mode=0o700, exist_ok=True)
    for name, text in (("mail.crt", leaf.cert + issuer.cert), ("mail.key", leaf.key),
                       ("ca.crt", issuer.cert)):
        (sec / "tls/public" / name).write_text(text)
        (sec / "tls/public" / name).chmod(0o600)
    return issuer


def test_with_files_the_public_ports_serve_the_admins_chain(example: Path) -> None:
    from mailstack import core
    from mailstack.plan import layout, tls

    example.write_text(example.read_text() + "tls: {mode: files}\n")
    sec = example.parent / "secrets"
    site = load_site(example)
    mark = site.marks.at(("tls", "mode"))
    assert findings(example) == [
        f"{mark}: tls.mode: secret 'tls/public/mail.{ext}' is missing: expected the "
        f"file {sec}/tls/public/mail.{ext}; put it there yourself (it cannot be generated)"
        for ext in ("crt", "key")]
    _public_chain(sec)
    assert findings(example) == []
    _, plan = core.plan(example)
    placed = {f.path: f for f in plan.hosts["mail"].files}
    assert placed[layout.public_cert("mail")].mode == 0o644
    assert placed[layout.public_key("mail")].mode == 0o600
    assert placed[layout.public_key("mail")].pickup == "tls"
    assert tls.served_cert(site, "mail") == layout.public_cert("mail")
    # the internal hops keep the site CA, which `secrets --renew` still renews
    assert placed[layout.host_cert("mail")].data["text"] == (sec / "tls/mail.crt").read_text()
    reissue(sec, days=3)
    (done,) = secrets.renew(site, sec)
    assert done.renewed
    # the admin's chain: expiring, naming too little, or of another key
    _public_chain(sec, days=3)
    (got,) = findings(example)
    assert got.endswith(", in 2 days; put a renewed one there"), got
    _public_chain(sec, names=("mail.krasnoyarsk.example.org",))
    (got,) = findings(example)
    assert got.endswith("the certificate does not name autoconfig.krasnoyarsk.example.org, "
                        "autodiscover.krasnoyarsk.example.org (clients.serve: mail clients ask "
                        "those names); put one there that names them too"), got
    _public_chain(sec, key=(sec / "tls/mail.key").read_text())
    (sec / "tls/public/mail.key").write_text(certs.new_ca("x").key)
    (got,) = findings(example)
    assert got == (f"{example}:8: hosts.mail: {sec}/tls/public/mail.crt: the certificate does "
                   f"not belong to the key {sec}/tls/public/mail.key")


def test_renew_renews_only_what_is_due_and_keeps_the_key(example: Path) -> None:
    sec = example.parent / "secrets"
    site = load_site(example)
    key_before = (sec / "tls/mail.key").read_bytes()
    fixture = (sec / "tls/mail.crt").read_text()
    (nothing,) = secrets.renew(site, sec)
    assert (nothing.renewed, nothing.reason) == (False, "")
    assert nothing.not_after == certs.inspect(fixture).not_after
    assert (sec / "tls/mail.crt").read_text() == fixture

    old = reissue(sec, days=20)
    (done,) = secrets.renew(site, sec)
    new = (sec / "tls/mail.crt").read_text()
    old_info, new_info = certs.inspect(old), certs.inspect(new)
    assert done.renewed and done.host == "mail" and done.path == sec / "tls/mail.crt"
    assert done.reason == (f"it expires on {old_info.not_after:%Y-%m-%d %H:%M UTC}, "
                           "in 19 days")
    assert new_info.serial != old_info.serial
    assert new_info.not_after == done.not_after
    left = new_info.not_after - datetime.datetime.now(datetime.UTC)
    assert certs.SERVER_DAYS - 1 <= left / DAY <= certs.SERVER_DAYS
    assert new_info.names == EXAMPLE_NAMES
    assert new_info.public_key == old_info.public_key  # the key is kept
    assert (sec / "tls/mail.key").read_bytes() == key_before
    assert certs.signed_by(new, (sec / "tls/ca.crt").read_text())
    assert (sec / "tls/mail.crt").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (sec / "tls").iterdir()) == [
        "ca.crt", "ca.key", "mail.crt", "mail.key"]
    assert findings(example) == []
    (again,) = secrets.renew(site, sec)
    assert not again.renewed and (sec / "tls/mail.crt").read_text() == new


@pytest.mark.parametrize(("how", "reason"), [
    ("expired", "it expired on "),
    ("other CA", "the site CA did not sign it"),
    ("other name", "it names old.krasnoyarsk.example.org, the site "
                   "mail.krasnoyarsk.example.org, autoconfig.krasnoyarsk.example.org, "
                   "autodiscover.krasnoyarsk.example.org"),
])
def test_renew_mends_a_certificate_that_is_wrong_for_the_site(example: Path, how: str,
                                                              reason: str) -> None:
    sec = example.parent / "secrets"
    if how == "expired":
        reissue(sec, days=5, back=6)
    elif how == "other CA":
        reissue(sec, days=400, ca=certs.new_ca("someone else"))
    else:
        reissue(sec, days=400, names=("old.krasnoyarsk.example.org",))
    (done,) = secrets.renew(load_site(example), sec)
    assert done.renewed and done.reason.startswith(reason), done.reason
    info = certs.inspect((sec / "tls/mail.crt").read_text())
    assert info.names == EXAMPLE_NAMES
    assert certs.signed_by((sec / "tls/mail.crt").read_text(), (sec / "tls/ca.crt").read_text())


def test_renew_refuses_a_certificate_of_another_key(example: Path) -> None:
    sec = example.parent / "secrets"
    other = certs.issue(certs.KeyPair((sec / "tls/ca.crt").read_text(),
                                      (sec / "tls/ca.key").read_text()),
                        ["mail.krasnoyarsk.example.org"], days=5)
    (sec / "tls/mail.crt").write_text(other.cert)
    with pytest.raises(InputError, match=r"tls/mail.crt: it does not belong to .*tls/mail.key; "
                                         "remove both"):
        secrets.renew(load_site(example), sec)
    assert (sec / "tls/mail.crt").read_text() == other.cert


def _verifies(ca: certs.KeyPair, leaf: str, name: str) -> bool:
    """Path validation as a client does it (cryptography's RFC 5280 verifier, which applies
    the CA's name constraints): does ``leaf`` verify for ``name`` under ``ca``?"""
    import ipaddress

    from cryptography import x509
    from cryptography.x509 import DNSName, IPAddress
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    root = x509.load_pem_x509_certificate(ca.cert.encode())
    try:
        subject = IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = DNSName(name)
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(subject)
    try:
        verifier.verify(x509.load_pem_x509_certificate(leaf.encode()), [])
    except VerificationError:
        return False
    return True


def test_a_new_site_ca_signs_only_for_the_sites_names(example: Path) -> None:
    site = load_site(example)
    assert secrets.ca_names(site) == ("krasnoyarsk.example.org",)
    ca = certs.new_ca("test CA", secrets.ca_names(site))
    assert certs.permitted_names(ca.cert) == ("krasnoyarsk.example.org",)
    for name, ok in (("mail.krasnoyarsk.example.org", True), ("krasnoyarsk.example.org", True),
                     ("mail.other.example", False), ("xkrasnoyarsk.example.org", False),
                     ("192.0.2.10", False)):
        leaf = certs.issue(ca, [name]).cert
        assert _verifies(ca, leaf, name) is ok, name
    # the lab's stand-in CAs (the outside world) stay unconstrained
    free = certs.new_ca("outside")
    assert certs.permitted_names(free.cert) is None
    assert _verifies(free, certs.issue(free, ["mail.other.example"]).cert, "mail.other.example")


def test_a_host_outside_the_domains_joins_the_constraints(example: Path) -> None:
    text = example.read_text().replace("hostname: mail.krasnoyarsk.example.org",
                                       "hostname: mx1.branch-hosting.example.net", 1)
    example.write_text(text)
    assert secrets.ca_names(load_site(example)) == ("krasnoyarsk.example.org",
                                                    "mx1.branch-hosting.example.net")
    assert certs.within("MX1.branch-hosting.example.net.", ["branch-hosting.example.net"])
    assert not certs.within("example.net", ["branch-hosting.example.net"])


def test_check_warns_of_an_unconstrained_ca_and_refuses_a_host_outside(example: Path) -> None:
    sec = example.parent / "secrets"
    old = certs.new_ca("mailstack krasnoyarsk CA")   # as mailstack made them before
    (sec / "tls/ca.crt").write_text(old.cert)
    (sec / "tls/ca.key").write_text(old.key)
    reissue(sec, days=400)
    anew = (f"move {sec}/tls away, run `mailstack secrets SITE` and apply, and hand out the "
            "new CA")
    assert findings(example) == [
        f"{example}:4: tls.mode: warning: {sec}/tls/ca.crt: the site CA has no name "
        "constraints: a device that trusts it would trust any name it signs; for a CA limited "
        f"to the site's names, {anew}"]
    other = certs.new_ca("mailstack krasnoyarsk CA", ["other.example"])
    (sec / "tls/ca.crt").write_text(other.cert)
    (sec / "tls/ca.key").write_text(other.key)
    reissue(sec, days=400)
    assert findings(example) == [
        f"{example}:9: hosts.mail.hostname: mail.krasnoyarsk.example.org is outside the names "
        f"the site CA may sign for (other.example): its certificate would not verify; {anew}"]
