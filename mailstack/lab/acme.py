"""The lab's ACME CA (tls.mode acme): Debian's pebble, run in the lab's client container.

pebble 2.4 from Debian ships neither a TLS certificate for its own HTTPS listener nor a unit
file, so :func:`configure` gives it both: a server certificate for the site's ACME server name
(the client carries that name as a network alias, :func:`~mailstack.lab.plan.plan_lab`) from
the lab's own CA ``build/<site>/lab-ca/acme-ca.crt`` (what the site's ``tls.acme.ca_secret``
receives, :mod:`mailstack.lab.outside`), and ``pebble.service``:

- the directory on :data:`PORT`, the management interface on :data:`MANAGEMENT_PORT`;
- HTTP-01 validated on port 80 (pebble's default is 5002), TLS-ALPN-01 on 443;
- names resolved by podman's DNS on the lab network's gateway (aardvark-dns answers the
  containers' names and aliases);
- ``PEBBLE_VA_NOSLEEP=1`` (no random validation delays), ``PEBBLE_WFE_NONCEREJECT=0`` (no
  nonces refused at random).

pebble makes a new root CA at every start: :func:`roots` reads the current one from the
management interface (``/roots/0``), the trust anchor of the certificates it issued since.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from mailstack.container import Container
from mailstack.errors import ToolError
from mailstack.lab.plan import LabPlan
from mailstack.lab.tls import KeyPair

__all__ = ["CONFIG", "MANAGEMENT_PORT", "PORT", "configure", "pebble_config", "roots", "unit"]

PORT = 14000
MANAGEMENT_PORT = 15000
DIR = "/etc/pebble"
CONFIG = f"{DIR}/pebble-config.json"
CERT, KEY, CA = f"{DIR}/cert.pem", f"{DIR}/key.pem", f"{DIR}/ca.pem"
UNIT = "/etc/systemd/system/pebble.service"

_FETCH = r"""
import ssl, sys, time, urllib.request
url, cafile, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
ctx = ssl.create_default_context(cafile=cafile)
while True:
    try:
        print(urllib.request.urlopen(url, context=ctx, timeout=10).read().decode(), end="")
        break
    except OSError as err:
        if time.monotonic() > deadline:
            sys.exit(f"{url}: {err}")
        time.sleep(0.2)
"""


def pebble_config() -> dict[str, object]:
    return {"pebble": {
        "listenAddress": f"0.0.0.0:{PORT}",
        "managementListenAddress": f"0.0.0.0:{MANAGEMENT_PORT}",
        "certificate": CERT, "privateKey": KEY,
        "httpPort": 80, "tlsPort": 443,
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}


def unit(gateway: str) -> str:
    return "\n".join([
        "[Unit]", "Description=pebble, the lab's ACME CA (mailstack.lab.acme)", "",
        "[Service]",
        "Environment=PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0",
        f"ExecStart=/usr/bin/pebble -config {CONFIG} -dnsserver {gateway}:53",
        "Restart=on-failure", "",
        "[Install]", "WantedBy=multi-user.target", ""])


def configure(plan: LabPlan, server: str, cert: KeyPair, ca: KeyPair) -> None:
    """Install pebble's configuration, certificate and unit in the client, (re)start it and
    wait until its directory ``server`` answers."""
    client = Container(plan.client.name)
    client.exec(["mkdir", "-p", DIR], check=True)
    client.put_file(CONFIG, json.dumps(pebble_config(), indent=2) + "\n")
    client.put_file(CERT, cert.cert)
    client.put_file(KEY, cert.key, 0o600)
    client.put_file(CA, ca.cert)
    client.put_file(UNIT, unit(plan.gateway))
    client.exec(["systemctl", "daemon-reload"], check=True, timeout=60)
    client.exec(["systemctl", "restart", "pebble"], check=True, timeout=60)
    _fetch(client, server, 30)


def _fetch(client: Container, url: str, seconds: float) -> str:
    proc = client.exec(["python3", "-c", _FETCH, url, CA, str(seconds)], timeout=seconds + 30)
    if proc.returncode != 0:
        raise ToolError(f"the lab's ACME server (pebble in {client.name}) does not answer: "
                        f"{proc.stderr.strip()[-500:]}")
    return proc.stdout


def roots(plan: LabPlan, server: str) -> str:
    """The root certificate pebble issues under now (PEM): the trust anchor of the
    certificates certbot obtained from it since it started."""
    host = urlsplit(server).hostname
    started = time.monotonic()
    pem = _fetch(Container(plan.client.name), f"https://{host}:{MANAGEMENT_PORT}/roots/0", 30)
    if "BEGIN CERTIFICATE" not in pem:
        raise ToolError(f"pebble's /roots/0 gave no certificate after "
                        f"{time.monotonic() - started:.0f} s: {pem[:200]!r}")
    return pem
