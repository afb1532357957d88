"""The formats mail clients read their settings from (plan/clients.py decides the settings).

- text and a one-page HTML sheet (`mailstack client-settings SITE [USER] [--html FILE]`);
- Mozilla autoconfig (``config-v1.1.xml``: Thunderbird, The Bat!, K-9/Thunderbird for Android);
- Microsoft Autodiscover (the "POX" answer Outlook gets for its POST);
- Apple's configuration profile (``.mobileconfig``: iOS, iPadOS, macOS Mail), with the site's
  CA as a root certificate payload when the site uses its internal CA.

The machine formats live in mailstack/clientconf.py (standard library only: the mail host
runs the same file to answer clients, plan/web.py); this module adds the text and the sheet
and turns their errors into InputError. Nothing here is rendered per account.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from mailstack import clientconf
from mailstack.clientconf import KIND_NAME, Settings, SettingsError
from mailstack.errors import InputError

TEMPLATES = Path(__file__).parent / "templates" / "_clients"
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


def autoconfig(settings: Settings) -> bytes:
    """Mozilla's ``config-v1.1.xml`` for a domain."""
    return clientconf.autoconfig(settings)


def autodiscover_address(body: bytes) -> str:
    """The address of Outlook's Autodiscover request (POST body), or an InputError."""
    try:
        return clientconf.autodiscover_address(body)
    except SettingsError as err:
        raise InputError(str(err)) from None


def autodiscover(settings: Settings, address: str) -> bytes:
    """Outlook's answer for ``address``."""
    return clientconf.autodiscover(settings, address)


def mobileconfig(settings: Settings, ca_pem: str | None) -> bytes:
    """Apple's profile for one account (and the site's CA when it has its own)."""
    try:
        return clientconf.mobileconfig(settings, ca_pem)
    except SettingsError as err:
        raise InputError(str(err)) from None
