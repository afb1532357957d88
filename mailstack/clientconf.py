"""Client settings as mail clients fetch them, and the small service that answers them.

Stand-alone (Python's standard library only): ``mailstack client-settings`` formats with it on
the admin's machine, and the mail host runs this very file, placed by apply
(``/usr/local/lib/mailstack/clientconf.py``), behind nginx (plan/web.py):

- Mozilla autoconfig (``config-v1.1.xml``: Thunderbird, The Bat!, K-9/Thunderbird for Android),
  at ``/mail/config-v1.1.xml`` (``https://autoconfig.<domain>/…``) and
  ``/.well-known/autoconfig/mail/config-v1.1.xml``;
- Microsoft Autodiscover ("POX": Outlook POSTs its request to
  ``/autodiscover/autodiscover.xml``; a static file would answer 405);
- Apple's configuration profile (``/mobileconfig?emailaddress=…``: iOS, iPadOS, macOS Mail),
  with the site's CA as a root certificate payload when the site uses its own CA.

Made on demand, never rendered per account: the service knows the site's domains and servers
(one JSON file, ``/etc/mailstack/clientconf.json``), not its accounts, so it answers every
address of a site domain alike and tells nobody which accounts exist. XML is built with
ElementTree and the profile with plistlib: every value is escaped by the library.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

Kind = Literal["imap", "pop3", "smtp"]
Socket = Literal["SSL", "STARTTLS"]

KIND_NAME = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}
AUTODISCOVER_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK = \
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
AUTODISCOVER_REQUEST = \
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
# a stable namespace for the mobileconfig's PayloadUUIDs (uuid5 of a name in it): the same
# site and address always give the same UUIDs, so a profile installed again replaces itself
UUID_NAMESPACE = uuid.UUID("5b0d6c1e-3f7a-5d2b-9c41-6d61696c7374")

AUTOCONFIG_PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"  # Outlook spells it either case
MOBILECONFIG_PATH = "/mobileconfig"
MOBILECONFIG_TYPE = "application/x-apple-aspen-config"
MAX_BODY = 16384  # an Autodiscover request is a few hundred bytes
ADDRESS = re.compile(r"^[^@\s<>\"(),;:\\\[\]]{1,64}@[A-Za-z0-9.-]{1,253}$")


class SettingsError(ValueError):
    """A request or an input these formats cannot answer (the text says why)."""


@dataclass(frozen=True)
class Server:
    kind: Kind
    hostname: str
    port: int
    socket: Socket


@dataclass(frozen=True)
class Settings:
    """What one person (or, without ``address``, anyone of a domain) configures."""

    site: str
    domain: str
    address: str | None          # None: a domain's settings (the user types his address)
    name: str | None
    servers: tuple[Server, ...]
    internal_ca: bool            # the site's own CA: the client must trust tls/ca.crt

    def of(self, kind: Kind) -> tuple[Server, ...]:
        return tuple(s for s in self.servers if s.kind == kind)


def payload_uuid(site: str, address: str, what: str) -> str:
    """A PayloadUUID that is the same every time for the same site, address and payload."""
    return str(uuid.uuid5(UUID_NAMESPACE, f"{site}/{address.lower()}/{what}")).upper()


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
    """The address of Outlook's Autodiscover request (POST body), or a SettingsError."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as err:
        raise SettingsError(f"the Autodiscover request is not XML: {err}") from None
    found = root.find(f".//{{{AUTODISCOVER_REQUEST}}}EMailAddress")
    if found is None:
        found = next((el for el in root.iter() if el.tag.endswith("EMailAddress")), None)
    if found is None or not (found.text or "").strip():
        raise SettingsError("the Autodiscover request names no EMailAddress")
    return found.text.strip()  # type: ignore[union-attr]


def autodiscover(settings: Settings, address: str) -> bytes:
    """Outlook's answer: one Protocol per server, TLS on every one (SSL on; Encryption SSL for
    implicit TLS, TLS for STARTTLS)."""
    # each element in its schema's default namespace, as Outlook's own examples write it
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE)
    response = ET.SubElement(root, "Response", xmlns=AUTODISCOVER_OUTLOOK)
    account = ET.SubElement(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for s in settings.servers:
        p = _sub(account, "Protocol")
        _sub(p, "Type", KIND_NAME[s.kind])
        _sub(p, "Server", s.hostname)
        _sub(p, "Port", s.port)
        _sub(p, "DomainRequired", "off")
        _sub(p, "LoginName", address)
        _sub(p, "SPA", "off")
        _sub(p, "SSL", "on")
        _sub(p, "Encryption", "SSL" if s.socket == "SSL" else "TLS")
        _sub(p, "AuthRequired", "on")
        if s.kind == "smtp":
            _sub(p, "UsePOPAuth", "on")
    return _xml(root)


def mobileconfig(settings: Settings, ca_pem: str | None) -> bytes:
    """Apple's profile for one account: the first IMAP and SMTP server (implicit TLS), and the
    site's CA when it has its own. PayloadUUIDs are uuid5 of site, address and payload: the
    same profile installed again replaces the old one."""
    import plistlib  # here, with ssl: `check` imports this module and needs neither
    import ssl

    if settings.address is None:
        raise SettingsError("a mobileconfig is made for one account: name its address")
    imap, smtp = settings.of("imap"), settings.of("smtp")
    if not imap or not smtp:
        raise SettingsError(f"{settings.address}: a mobileconfig needs IMAP and submission "
                            "in the account's protocols")
    ident = f"org.mailstack.{settings.site}.{settings.address.lower()}"
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.mail",
        "PayloadUUID": payload_uuid(settings.site, settings.address, "mail"),
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
            "PayloadUUID": payload_uuid(settings.site, settings.address, "ca"),
            "PayloadDisplayName": f"{settings.site} mail CA",
            "PayloadContent": ssl.PEM_cert_to_DER_cert(ca_pem),
        })
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": payload_uuid(settings.site, settings.address, "profile"),
        "PayloadDisplayName": f"{settings.domain} mail ({settings.address})",
        "PayloadContent": content,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)


# -- the service ---------------------------------------------------------------------------


def service_data(site: str, domains: list[str], servers: list[Server], ca_pem: str | None) -> str:
    """The service's JSON file (plan/web.py renders it): what every answer is made from."""
    return json.dumps({"site": site, "domains": domains, "ca": ca_pem,
                       "servers": [[s.kind, s.hostname, s.port, s.socket] for s in servers]},
                      indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Service:
    """What the service answers from (its JSON file)."""

    site: str
    domains: tuple[str, ...]
    servers: tuple[Server, ...]
    ca_pem: str | None

    @classmethod
    def load(cls, text: str) -> Service:
        data = json.loads(text)
        return cls(data["site"], tuple(d.lower() for d in data["domains"]),
                   tuple(Server(k, h, int(p), s) for k, h, p, s in data["servers"]),
                   data.get("ca"))

    def domain_of(self, address: str | None, host: str | None) -> str:
        """The site domain a request is for: its address's, else its Host's (``autoconfig.``
        and ``autodiscover.`` dropped). SettingsError for anything else."""
        if address is not None:
            if not ADDRESS.match(address):
                raise SettingsError("not an e-mail address")
            domain = address.rsplit("@", 1)[1].lower().rstrip(".")
        else:
            name = (host or "").rsplit(":", 1)[0].lower().rstrip(".")
            for prefix in ("autoconfig.", "autodiscover."):
                name = name.removeprefix(prefix)
            domain = name
        if domain not in self.domains:
            raise SettingsError("not a mail domain of this site")
        return domain

    def settings(self, domain: str, address: str | None = None) -> Settings:
        return Settings(self.site, domain, address, None, self.servers, self.ca_pem is not None)

    def answer(self, method: str, target: str, host: str | None,
               body: bytes = b"") -> tuple[int, str, bytes, dict[str, str]]:
        """(status, content type, body, extra headers) for one request: pure, so that the
        tests ask it everything a client may send."""
        url = urllib.parse.urlsplit(target)
        path = url.path.rstrip("/") or "/"
        query = urllib.parse.parse_qs(url.query)
        address = query["emailaddress"][0] if query.get("emailaddress") else None
        try:
            if path in AUTOCONFIG_PATHS:
                if method not in ("GET", "HEAD"):
                    return _refuse(405, "GET, HEAD")
                domain = self.domain_of(address, host)
                return 200, "application/xml", autoconfig(self.settings(domain)), {}
            if path.lower() == AUTODISCOVER_PATH:
                if method != "POST":
                    return _refuse(405, "POST")
                asked = autodiscover_address(body)
                domain = self.domain_of(asked, None)
                return 200, "application/xml", autodiscover(self.settings(domain, asked),
                                                            asked), {}
            if path == MOBILECONFIG_PATH:
                if method not in ("GET", "HEAD"):
                    return _refuse(405, "GET, HEAD")
                if address is None:
                    raise SettingsError("name the account: ?emailaddress=ADDRESS")
                domain = self.domain_of(address, None)
                local = address.rsplit("@", 1)[0]
                data = mobileconfig(self.settings(domain, f"{local}@{domain}"), self.ca_pem)
                return 200, MOBILECONFIG_TYPE, data, {
                    "Content-Disposition": f'attachment; filename="{domain}.mobileconfig"'}
        except SettingsError as err:
            return 404, "text/plain; charset=utf-8", f"{err}\n".encode(), {}
        return 404, "text/plain; charset=utf-8", b"not found\n", {}


def _refuse(status: int, allow: str) -> tuple[int, str, bytes, dict[str, str]]:
    return status, "text/plain; charset=utf-8", b"method not allowed\n", {"Allow": allow}


def make_server(service: Service, address: str, port: int) -> ThreadingHTTPServer:
    """The HTTP server answering from ``service`` (http.server is imported here: `mailstack
    check` imports this module for its formats and needs no web server)."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        """One request: the answer comes from :meth:`Service.answer`."""

        server_version = "mailstack-clientconf"
        sys_version = ""

        def _reply(self, method: str) -> None:
            body = b""
            if method == "POST":
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    self.send_error(413 if length > MAX_BODY else 400)
                    return
                body = self.rfile.read(length)
            status, ctype, data, extra = service.answer(method, self.path,
                                                        self.headers.get("Host"), body)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply("GET")

        def do_HEAD(self) -> None:
            self._reply("HEAD")

        def do_POST(self) -> None:
            self._reply("POST")

        def log_message(self, format: str, *args: object) -> None:
            # the journal: the method, the path without its query (no addresses), the status
            path = urllib.parse.urlsplit(getattr(self, "path", "")).path
            status = args[1] if len(args) > 1 else ""
            sys.stderr.write(f"{getattr(self, 'command', '-')} {path} {status}\n")

    return http.server.ThreadingHTTPServer((address, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Answer mail clients' settings requests "
                                     "(behind nginx, on loopback).")
    parser.add_argument("data", help="the JSON file plan/web.py renders")
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with open(args.data, encoding="utf-8") as f:
        service = Service.load(f.read())
    with make_server(service, args.listen, args.port) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
