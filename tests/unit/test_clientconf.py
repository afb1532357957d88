"""The client settings service (mailstack/clientconf.py) and its plan (plan/web.py): what each
request gets, over a real HTTP socket on loopback, and what the serving host receives."""

from __future__ import annotations

import dataclasses
import http.client
import json
import plistlib
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mailstack import clientconf, core
from mailstack.lab.plan import plan_lab
from mailstack.plan import clients, web
from mailstack.site.load import load_site

DOMAIN = "krasnoyarsk.example.org"
HOST = "mail.krasnoyarsk.example.org"
REQUEST = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft'
           b'.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>'
           b'Anna@KRASNOYARSK.example.org</EMailAddress></Request></Autodiscover>')


@pytest.fixture
def service(example: Path) -> clientconf.Service:
    site = load_site(example)
    ca = (example.parent / "secrets" / "tls" / "ca.crt").read_text(encoding="utf-8")
    return clientconf.Service.load(clientconf.service_data(
        site.site, list(site.domains), list(clients.servers(site)), ca))


def servers(xml: bytes) -> list[tuple[str | None, str | None]]:
    root = ET.fromstring(xml)
    return [(el.get("type"), el.findtext("port")) for el in root.iter()
            if el.tag in ("incomingServer", "outgoingServer")]


def test_autoconfig_answers_by_address_or_host_name(service: clientconf.Service) -> None:
    for target, host in [("/mail/config-v1.1.xml?emailaddress=anna%40" + DOMAIN, "x"),
                         ("/mail/config-v1.1.xml", f"autoconfig.{DOMAIN.upper()}:443"),
                         ("/.well-known/autoconfig/mail/config-v1.1.xml", DOMAIN)]:
        status, ctype, body, _ = service.answer("GET", target, host)
        assert (status, ctype) == (200, "application/xml"), (target, host, body)
        assert servers(body)[0] == ("imap", "993") and len(servers(body)) == 6
    # a domain that is not the site's, and a malformed address, get nothing
    for target, host in [("/mail/config-v1.1.xml", "autoconfig.other.example"),
                         ("/mail/config-v1.1.xml?emailaddress=a%40other.example", DOMAIN),
                         ("/mail/config-v1.1.xml?emailaddress=no-at-sign", DOMAIN)]:
        assert service.answer("GET", target, host)[0] == 404, (target, host)


def test_autodiscover_takes_a_post_only(service: clientconf.Service) -> None:
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        status, _, body, _ = service.answer("POST", path, None, REQUEST)
        assert status == 200, body
        assert b"<LoginName>Anna@KRASNOYARSK.example.org</LoginName>" in body
    status, _, _, headers = service.answer("GET", "/autodiscover/autodiscover.xml", DOMAIN)
    assert (status, headers) == (405, {"Allow": "POST"})
    assert service.answer("POST", "/autodiscover/autodiscover.xml", None, b"<x")[0] == 404
    other = REQUEST.replace(b"KRASNOYARSK.example.org", b"other.example")
    assert service.answer("POST", "/autodiscover/autodiscover.xml", None, other)[0] == 404


def test_mobileconfig_is_made_for_the_address_asked(service: clientconf.Service) -> None:
    status, ctype, body, headers = service.answer(
        "GET", f"/mobileconfig?emailaddress=anna%40{DOMAIN}", None)
    assert (status, ctype) == (200, clientconf.MOBILECONFIG_TYPE)
    assert headers["Content-Disposition"] == f'attachment; filename="{DOMAIN}.mobileconfig"'
    profile = plistlib.loads(body)
    mail, ca = profile["PayloadContent"]
    assert mail["EmailAddress"] == f"anna@{DOMAIN}" and mail["IncomingMailServerPortNumber"] == 993
    assert ca["PayloadType"] == "com.apple.security.root"
    # the same request gives the same profile (its UUIDs too): installed again, it replaces itself
    assert service.answer("GET", f"/mobileconfig?emailaddress=anna%40{DOMAIN}", None)[2] == body
    assert service.answer("GET", "/mobileconfig", DOMAIN)[0] == 404
    assert service.answer("POST", "/mobileconfig", DOMAIN)[0] == 405
    assert service.answer("GET", "/etc/passwd", DOMAIN)[0] == 404


def test_the_service_answers_over_http(service: clientconf.Service) -> None:
    server = clientconf.make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        conn.request("POST", "/autodiscover/autodiscover.xml", body=REQUEST,
                     headers={"Host": f"autodiscover.{DOMAIN}"})
        resp = conn.getresponse()
        assert resp.status == 200 and b"<Server>" + HOST.encode() in resp.read()
        # a body over the limit is refused before it is read
        conn.request("POST", "/autodiscover/autodiscover.xml", body=b"x" * 20000)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 413
        conn.close()
    finally:
        server.shutdown()
        server.server_close()


def test_the_service_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    """The mail host runs the file alone: python3 -I, no mailstack, no site-packages."""
    copy = tmp_path / "clientconf.py"
    copy.write_text(Path(clientconf.__file__).read_text(encoding="utf-8"), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-I", "-S", str(copy), "--help"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--port" in proc.stdout


def test_only_the_imap_host_serves_and_its_certificate_names_the_client_names(example) -> None:
    site = load_site(example)
    assert web.serving_host(site) == "mail"
    assert web.cert_names(site, "mail") == (HOST, f"autoconfig.{DOMAIN}",
                                            f"autodiscover.{DOMAIN}")
    _, plan = core.plan(example)
    host = plan.hosts["mail"]
    assert "nginx-light" in host.packages and web.SERVICE in host.services
    placed = {f.path: f for f in host.files}
    assert placed[web.NGINX_SITE].pickup == "nginx" and placed[web.UNIT].pickup == "systemd"
    data = json.loads(placed[web.DATA].data["text"])
    assert data["domains"] == [DOMAIN] and data["ca"].startswith("-----BEGIN CERTIFICATE")
    assert host.facts["web"]["remove"] == [web.DEBIAN_DEFAULT_SITE]
    lab = plan_lab(site, taken=())
    assert set(web.client_names(site)) <= set(next(c for c in lab.containers
                                                   if c.key == "mail").aliases)
    off = dataclasses.replace(site, clients=dataclasses.replace(site.clients, serve=False))
    assert web.serving_host(off) is None and web.cert_names(off, "mail") == (HOST,)
    assert web.files(off, "mail", {}) == [] and web.facts(off, "mail") == {}


def test_check_wants_the_client_names_in_the_certificate(example, capsys) -> None:
    from mailstack.cli import main

    assert main(["check", str(example)]) == 0
    # a certificate made before clients.serve names the host only
    from mailstack import certs

    ca = certs.KeyPair((example.parent / "secrets/tls/ca.crt").read_text(encoding="utf-8"),
                       (example.parent / "secrets/tls/ca.key").read_text(encoding="utf-8"))
    key = (example.parent / "secrets/tls/mail.key").read_text(encoding="utf-8")
    (example.parent / "secrets/tls/mail.crt").write_text(
        certs.issue(ca, [HOST], client=True, key=key).cert, encoding="utf-8")
    capsys.readouterr()
    assert main(["check", str(example)]) == 1
    err = capsys.readouterr().err
    assert (f"hosts.mail: {example.parent}/secrets/tls/mail.crt: the certificate does not name "
            f"autoconfig.{DOMAIN}, autodiscover.{DOMAIN} (clients.serve: mail clients ask "
            "those names); `mailstack secrets SITE --renew` makes one that does") in err
    assert main(["secrets", str(example), "--renew"]) == 0
    assert main(["check", str(example)]) == 0
