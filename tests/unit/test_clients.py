"""Client settings (issue 13): one list of servers, five formats, each parsed back by the
library a client would use (ElementTree for the XML, plistlib for Apple's profile)."""

from __future__ import annotations

import dataclasses
import plistlib
import ssl
import xml.etree.ElementTree as ET

import pytest

from mailstack import clientconf, clients, core
from mailstack.cli import main
from mailstack.errors import InputError
from mailstack.plan import clients as plan
from mailstack.site.load import load_site

IVAN, OLGA = "ivan@krasnoyarsk.example.org", "olga@krasnoyarsk.example.org"
HOST = "mail.krasnoyarsk.example.org"
AUTOCONFIG_PORTS = [("imap", 993, "SSL"), ("imap", 143, "STARTTLS"), ("pop3", 995, "SSL"),
                    ("pop3", 110, "STARTTLS"), ("smtp", 465, "SSL"), ("smtp", 587, "STARTTLS")]
NS = {"r": clientconf.AUTODISCOVER_RESPONSE, "o": clientconf.AUTODISCOVER_OUTLOOK}


def test_servers_follow_the_accounts_protocols(example) -> None:
    site = load_site(example)
    ivan = plan.settings(site, IVAN)
    assert [(s.kind, s.port, s.socket) for s in ivan.servers] == AUTOCONFIG_PORTS
    assert {s.hostname for s in ivan.servers} == {HOST}
    # the example's Olga has IMAP and submission only: no client is told of POP3
    olga = plan.settings(site, OLGA.upper())
    assert olga.address == OLGA and [s.port for s in olga.servers] == [993, 143, 465, 587]
    assert olga.internal_ca


def test_unknown_and_locked_accounts_are_refused(example) -> None:
    site = load_site(example)
    with pytest.raises(InputError, match=r"^nobody@krasnoyarsk\.example\.org: no account of "
                                         r"the site krasnoyarsk has this address$"):
        plan.settings(site, "nobody@krasnoyarsk.example.org")
    locked = dataclasses.replace(site, accounts=tuple(
        dataclasses.replace(a, enabled=a.mail != IVAN) for a in site.accounts))
    with pytest.raises(InputError, match=r"^ivan@krasnoyarsk.example.org: the account is "
                                         r"locked \(enabled: false\)$"):
        plan.settings(locked, IVAN)
    with pytest.raises(InputError, match=r"^other\.example: not a mail domain of the site"):
        plan.domain_settings(site, "other.example")


def test_autoconfig_names_every_server_once_with_tls(example) -> None:
    site = load_site(example)
    root = ET.fromstring(clients.autoconfig(plan.domain_settings(site, "KRASNOYARSK.example.org")))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.findtext("domain") == "krasnoyarsk.example.org"
    got = [(s.get("type"), int(s.findtext("port", "0")), s.findtext("socketType"))
           for s in provider if s.tag in ("incomingServer", "outgoingServer")]
    assert got == AUTOCONFIG_PORTS
    for server in provider.iter("incomingServer"):
        assert (server.findtext("hostname"), server.findtext("username"),
                server.findtext("authentication")) == (HOST, "%EMAILADDRESS%",
                                                       "password-cleartext")
    assert [s.get("type") for s in provider.iter("outgoingServer")] == ["smtp", "smtp"]


def test_autodiscover_answers_in_outlooks_namespaces(example) -> None:
    site = load_site(example)
    request = (b'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="http://schemas.'
               b'microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
               b'<EMailAddress>Ivan@krasnoyarsk.example.org</EMailAddress><AcceptableResponse'
               b'Schema>http://schemas.microsoft.com/exchange/autodiscover/outlook/response'
               b'schema/2006a</AcceptableResponseSchema></Request></Autodiscover>')
    address = clients.autodiscover_address(request)
    assert address == "Ivan@krasnoyarsk.example.org"
    root = ET.fromstring(clients.autodiscover(plan.settings(site, address), address))
    account = root.find("o:Response/o:Account", NS)
    assert root.tag == f"{{{clientconf.AUTODISCOVER_RESPONSE}}}Autodiscover" and account is not None
    assert account.findtext("o:Action", namespaces=NS) == "settings"
    got = [(p.findtext("o:Type", namespaces=NS), int(p.findtext("o:Port", "0", NS)),
            p.findtext("o:Encryption", namespaces=NS), p.findtext("o:SSL", namespaces=NS),
            p.findtext("o:LoginName", namespaces=NS), p.findtext("o:Server", namespaces=NS))
           for p in account.findall("o:Protocol", NS)]
    assert got == [(kind.upper(), port, "SSL" if sock == "SSL" else "TLS", "on", address, HOST)
                   for kind, port, sock in AUTOCONFIG_PORTS]
    for bad, message in ((b"<not xml", "the Autodiscover request is not XML"),
                         (b"<Autodiscover><Request/></Autodiscover>",
                          "the Autodiscover request names no EMailAddress")):
        with pytest.raises(InputError, match=message):
            clients.autodiscover_address(bad)


def test_mobileconfig_is_a_plist_with_stable_uuids_and_the_sites_ca(example) -> None:
    site = load_site(example)
    ca = (example.parent / "secrets" / "tls" / "ca.crt").read_text()
    raw = clients.mobileconfig(plan.settings(site, IVAN), ca)
    profile = plistlib.loads(raw)
    assert profile["PayloadType"] == "Configuration"
    mail, root = profile["PayloadContent"]
    assert (mail["PayloadType"], mail["EmailAccountType"], mail["EmailAddress"]) == (
        "com.apple.mail.managed", "EmailTypeIMAP", IVAN)
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"]) == (HOST, 993, True)
    assert (mail["OutgoingMailServerPortNumber"], mail["OutgoingMailServerUseSSL"],
            mail["OutgoingPasswordSameAsIncomingPassword"]) == (465, True, True)
    assert root["PayloadType"] == "com.apple.security.root"
    assert root["PayloadContent"] == ssl.PEM_cert_to_DER_cert(ca)
    # the same profile every time; another account's UUIDs differ
    assert clients.mobileconfig(plan.settings(site, IVAN), ca) == raw
    olga = plistlib.loads(clients.mobileconfig(plan.settings(site, OLGA), None))
    assert len(olga["PayloadContent"]) == 1
    uuids = {p["PayloadUUID"] for p in (profile, mail, root)}
    assert len(uuids) == 3 and not uuids & {olga["PayloadUUID"],
                                            olga["PayloadContent"][0]["PayloadUUID"]}
    with pytest.raises(InputError, match="a mobileconfig is made for one account"):
        clients.mobileconfig(plan.settings(site), ca)


def test_the_sheet_escapes_what_the_site_file_says(example) -> None:
    site = load_site(example)
    settings = dataclasses.replace(plan.settings(site, IVAN), name="<script>x</script> & Co")
    page = clients.html(settings, "-----BEGIN CERTIFICATE-----\nAB<C\n")
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt; &amp; Co" in page
    assert "AB&lt;C" in page and "<td>993</td><td>SSL/TLS</td>" in page
    no_ca = clients.html(dataclasses.replace(settings, internal_ca=False), None)
    assert "certificate authority" not in no_ca


def test_cli_prints_the_text_and_writes_the_sheet(capsys, example, tmp_path) -> None:
    assert main(["client-settings", str(example), OLGA]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.splitlines()[:6] == [
        f"Mail settings for Olga Sidorova <{OLGA}>", "",
        f"  IMAP  incoming  {HOST}  port 993  SSL/TLS",
        f"  IMAP  incoming  {HOST}  port 143  STARTTLS",
        f"  SMTP  outgoing  {HOST}  port 465  SSL/TLS",
        f"  SMTP  outgoing  {HOST}  port 587  STARTTLS"]
    sheet = tmp_path / "ivan.html"
    assert main(["client-settings", str(example), IVAN, "--html", str(sheet)]) == 0
    assert capsys.readouterr().out == f"wrote {sheet}\n"
    assert "BEGIN CERTIFICATE" in sheet.read_text() and sheet.stat().st_mode & 0o777 == 0o644
    assert core.client_settings(example, fmt="autoconfig").startswith(b"<?xml")


def test_cli_errors_are_one_line(capsys, example) -> None:
    assert main(["client-settings", str(example), "nobody@krasnoyarsk.example.org"]) == 2
    assert capsys.readouterr() == (
        "", "nobody@krasnoyarsk.example.org: no account of the site krasnoyarsk has this "
            "address\n")
    assert main(["client-settings", str(example), "--format", "mobileconfig"]) == 2
    assert capsys.readouterr().err == "a mobileconfig is made for one account: name its address\n"
    (example.parent / "secrets" / "tls" / "ca.crt").unlink()
    assert main(["client-settings", str(example), IVAN, "--format", "mobileconfig"]) == 2
    assert capsys.readouterr().err == (
        f"{example.parent / 'secrets' / 'tls' / 'ca.crt'}: missing; run "
        f"`mailstack secrets {example}` first\n")
