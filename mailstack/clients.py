"""The formats mail clients read their settings from (plan/clients.py decides the settings).

- text and a one-page HTML sheet (`mailstack client-settings SITE [USER] [--html FILE]`);
- Mozilla autoconfig (``config-v1.1.xml``: Thunderbird, The Bat!, K-9/Thunderbird for Android);
- Microsoft Autodiscover (the "POX" answer Outlook gets for its POST);
- Apple's configuration profile (``.mobileconfig``: iOS, iPadOS, macOS Mail), with the site's
  CA as a root certificate payload when the site uses its internal CA.

XML is built with ElementTree and the profile with plistlib: every value is escaped by the
library, whatever a name or an address contains. Nothing here is rendered per account.
"""

from __future__ import annotations

import plistlib
import ssl
import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2

from mailstack.errors import InputError
from mailstack.plan import clients as plan
from mailstack.plan.clients import Settings

TEMPLATES = Path(__file__).parent / "templates" / "_clients"
AUTODISCOVER_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK = \
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
AUTODISCOVER_REQUEST = \
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"

KIND_NAME = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}
SOCKET_NAME = {"SSL": "SSL/TLS", "STARTTLS": "STARTTLS"}


def user_name(settings: Settings) -> str:
    return settings.address or "your full e-mail address"


def text(settings: Settings) -> str:
    """What a person types into any client, one server per line, preferred first."""
    who = f"{settings.name} <{settings.address}>" if settings.address else \
        f"any address @{settings.domain}"
    lines = [f"Mail settings for {who}", ""]
    for s in settings.servers:
        direction = "outgoing" if s.kind == "smtp" else "incoming"
        lines.append(f"  {KIND_NAME[s.kind]:<5} {direction:<9} {s.hostname}  port {s.port:<4} "
                     f"{SOCKET_NAME[s.socket]}")
    lines += ["", f"  user name: {user_name(settings)} (the full address)",
              "  password:  the account's password (authentication: normal password; the "
              "connection is encrypted)",
              "  outgoing:  authentication required, same user name and password as incoming"]
    if settings.internal_ca:
        lines += ["  certificate: the servers' come from the site's own CA: install its "
                  "certificate", "               (tls/ca.crt, also in the --html sheet) on the "
                  "device first"]
    return "\n".join(lines) + "\n"


def html(settings: Settings, ca_pem: str | None) -> str:
    """The one-page sheet an admin hands out (Jinja, autoescaped)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    rows = [{"kind": KIND_NAME[s.kind], "direction": "outgoing" if s.kind == "smtp" else
             "incoming", "hostname": s.hostname, "port": s.port,
             "socket": SOCKET_NAME[s.socket]} for s in settings.servers]
    return env.get_template("sheet.html.j2").render(
        settings=settings, rows=rows, user=user_name(settings), ca_pem=ca_pem)


def _sub(parent: ET.Element, tag: str, value: object = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if value is not None:
        el.text = str(value)
    return el


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def autoconfig(settings: Settings) -> bytes:
    """Mozilla's ``config-v1.1.xml`` for a domain (the user name is the address the client
    asked with: ``%EMAILADDRESS%``)."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=settings.domain)
    _sub(provider, "domain", settings.domain)
    _sub(provider, "displayName", f"{settings.domain} mail")
    _sub(provider, "displayShortName", settings.domain)
    for s in settings.servers:
        tag = "outgoingServer" if s.kind == "smtp" else "incomingServer"
        server = ET.SubElement(provider, tag, type=s.kind)
        _sub(server, "hostname", s.hostname)
        _sub(server, "port", s.port)
        _sub(server, "socketType", s.socket)
        _sub(server, "username", "%EMAILADDRESS%")
        # the password goes in clear inside the TLS connection (PLAIN/LOGIN)
        _sub(server, "authentication", "password-cleartext")
    return _xml(root)


def autodiscover_address(body: bytes) -> str:
    """The address of Outlook's Autodiscover request (POST body), or an InputError."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as err:
        raise InputError(f"the Autodiscover request is not XML: {err}") from None
    found = root.find(f".//{{{AUTODISCOVER_REQUEST}}}EMailAddress")
    if found is None:
        found = next((el for el in root.iter() if el.tag.endswith("EMailAddress")), None)
    if found is None or not (found.text or "").strip():
        raise InputError("the Autodiscover request names no EMailAddress")
    return found.text.strip()  # type: ignore[union-attr]


def autodiscover(settings: Settings, address: str) -> bytes:
    """Outlook's answer: one Protocol per server, TLS on every one (SSL on; Encryption SSL for
    implicit TLS, TLS for STARTTLS)."""
    # each element in its schema's default namespace, as Outlook's own examples write it
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE)
    response = ET.SubElement(root, "Response", xmlns=AUTODISCOVER_OUTLOOK)
    account = ET.SubElement(response, "Account")
    sub = _sub

    sub(account, "AccountType", "email")
    sub(account, "Action", "settings")
    for s in settings.servers:
        p = sub(account, "Protocol")
        sub(p, "Type", KIND_NAME[s.kind])
        sub(p, "Server", s.hostname)
        sub(p, "Port", s.port)
        sub(p, "DomainRequired", "off")
        sub(p, "LoginName", address)
        sub(p, "SPA", "off")
        sub(p, "SSL", "on")
        sub(p, "Encryption", "SSL" if s.socket == "SSL" else "TLS")
        sub(p, "AuthRequired", "on")
        if s.kind == "smtp":
            sub(p, "UsePOPAuth", "on")
    return _xml(root)


def mobileconfig(settings: Settings, ca_pem: str | None) -> bytes:
    """Apple's profile for one account: the first IMAP and SMTP server (implicit TLS), and the
    site's CA when it has its own. PayloadUUIDs are uuid5 of site, address and payload: the
    same profile installed again replaces the old one."""
    if settings.address is None:
        raise InputError("a mobileconfig is made for one account: name its address")
    imap, smtp = settings.of("imap"), settings.of("smtp")
    if not imap or not smtp:
        raise InputError(f"{settings.address}: a mobileconfig needs IMAP and submission "
                         "in the account's protocols")
    ident = f"org.mailstack.{settings.site}.{settings.address.lower()}"
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.mail",
        "PayloadUUID": plan.payload_uuid(settings.site, settings.address, "mail"),
        "PayloadDisplayName": f"Mail: {settings.address}",
        "EmailAccountDescription": settings.address,
        "EmailAccountName": settings.name or settings.address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": settings.address,
        "IncomingMailServerHostName": imap[0].hostname,
        "IncomingMailServerPortNumber": imap[0].port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": settings.address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": smtp[0].hostname,
        "OutgoingMailServerPortNumber": smtp[0].port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": settings.address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    content: list[dict[str, object]] = [mail]
    if ca_pem is not None:
        content.append({
            "PayloadType": "com.apple.security.root",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{ident}.ca",
            "PayloadUUID": plan.payload_uuid(settings.site, settings.address, "ca"),
            "PayloadDisplayName": f"{settings.site} mail CA",
            "PayloadContent": ssl.PEM_cert_to_DER_cert(ca_pem),
        })
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": plan.payload_uuid(settings.site, settings.address, "profile"),
        "PayloadDisplayName": f"{settings.domain} mail ({settings.address})",
        "PayloadContent": content,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
