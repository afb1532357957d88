"""Opt-in (`make tlsscan`): a full TLS scan of every port of the example in the lab.

testssl.sh (Debian's 3.0.8) runs from the lab's client against each TLS endpoint: SMTP 25
(STARTTLS), 465 and 587, IMAP 993 and 143, POP3 995 and 110, HTTPS 443 (the client settings).
testssl 3.0.8 cannot STARTTLS ManageSieve, so 4190 is asked with ``openssl s_client -starttls
sieve``. Every endpoint: no SSLv2/SSLv3/TLS 1.0/TLS 1.1, no NULL, anonymous, export or LOW
suites, a chain that verifies against the site's CA. Each scan takes 10-100 s (port 25 is the
slowest); the suite's quick check of the same properties is verify's ``tls`` part.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from mailstack import apply, lab
from mailstack.container import Container
from tests.conftest import example_lab_site, live

pytestmark = [*live(ssh=True, ansible=True), pytest.mark.slow]

HOST = "mail.krasnoyarsk.example.org"
CA = "/root/site-ca.crt"
ENDPOINTS = [(25, "smtp"), (465, None), (587, "smtp"), (993, None), (143, "imap"),
             (995, None), (110, "pop3"), (443, None)]
NOT_OFFERED = ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "cipherlist_NULL", "cipherlist_aNULL",
               "cipherlist_EXPORT", "cipherlist_LOW")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("tlsscan")
    site, build = example_lab_site(root, "scan")
    try:
        lab.up(site, build_dir=build)
        report = apply.apply(site, inventory=lab.state(site, build_dir=build).inventory,
                             build_dir=build, out=lambda line: None)
        assert report.ok
        box = Container(lab.state(site, build_dir=build).client.name)
        box.put_file(CA, (root / "secrets" / "tls" / "ca.crt").read_text(), 0o644)
        yield box
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("port", "starttls"), ENDPOINTS, ids=[str(p) for p, _ in ENDPOINTS])
def test_testssl_finds_only_modern_tls_and_a_trusted_chain(client, port, starttls) -> None:
    started = time.monotonic()
    out = f"/tmp/testssl-{port}.json"
    args = ["testssl", "--quiet", "--warnings", "off", "--color", "0", "--add-ca", CA,
            "-p", "-s", "-S", "--jsonfile", out, *(["--starttls", starttls] if starttls else []),
            f"{HOST}:{port}"]
    client.exec(["rm", "-f", out])
    client.exec(args, timeout=600)
    found = {f["id"]: f["finding"] for f in json.loads(client.exec(["cat", out]).stdout)}
    offered = {k: found.get(k) for k in NOT_OFFERED if found.get(k) != "not offered"}
    assert offered == {}, offered
    assert "offered" in (found.get("TLS1_2", "") + found.get("TLS1_3", ""))
    assert found.get("cert_chain_of_trust", "").startswith("passed"), found.get(
        "cert_chain_of_trust")
    assert found.get("cert_trust", "").startswith("Ok"), found.get("cert_trust")
    print(f"\n[port {port}: {time.monotonic() - started:.0f} s; TLS 1.2 "
          f"{found.get('TLS1_2')}, TLS 1.3 {found.get('TLS1_3')}, AVERAGE suites "
          f"{found.get('cipherlist_AVERAGE')}]")


def test_managesieve_verifies_and_refuses_tls_1_1(client) -> None:
    base = ["openssl", "s_client", "-starttls", "sieve", "-connect", f"{HOST}:4190",
            "-CAfile", CA, "-verify_return_error", "-verify_hostname", HOST, "-brief"]
    good = client.exec(base, input="", timeout=60)
    assert good.returncode == 0 and "Verification: OK" in good.stderr, good.stderr
    old = client.exec([*base, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], input="", timeout=60)
    assert old.returncode != 0, old.stderr
