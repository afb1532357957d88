"""Plan the local lab of a site: network, addresses and one container per machine. Pure.

One podman network ``mailstack-<site>`` (``--internal``: nothing in it can reach anything
outside) holds:

* one container per site host, ``mailstack-<site>-<host>``, named by the host's FQDN (also its
  network alias, so the other containers resolve it), at ``.10``, ``.11``, ...; the host that
  serves client settings (``clients.serve``) also answers ``autoconfig.<domain>`` and
  ``autodiscover.<domain>``;
* one container per relay in ``site.relays`` that logs nobody in (no ``auth``),
  ``mailstack-<site>-relay-<name>``, at ``.200``, ``.201``, ...: the head office's smarthost.
  A relay named by host name gets that name as network alias (podman's DNS answers A
  records); a relay named by IP address keeps that address *pinned*: the relay container
  carries it as an extra /32 and every other container routes it to the relay's MAC address
  (see :mod:`mailstack.lab.run`);
* the provider ``mailstack-<site>-provider`` at ``.150`` (only when the site has one): a
  public mail provider that stands in for every relay with ``auth`` and every ``fetch`` host,
  with all their names as aliases (or pinned addresses). It listens on 465 (TLS from the first
  byte) and 587 (STARTTLS) plus whatever other port those relays name, and IMAP/POP3 over TLS
  on 993/995 (or the fetch's port); one mailbox per relay login and per fetch user. A relay
  without ``auth`` whose host is also a provider host is served by the provider too;
* the client ``mailstack-<site>-client`` at ``.100``, where probes come from (an address
  outside Postfix's ``mynetworks``).

The lab subnet is a private /24 of ``10.89.128.0/17`` picked from the site name (different
sites get different subnets; ``taken`` skips ones in use), gateway ``.254``. It is never the
relays' own /24: on this project's machines 192.0.2.0/24 is the host's own LAN (its default
gateway is 192.0.2.1, the example's relay) and 203.0.113.80 its package mirror, so a podman
network on a documentation /24 is either refused by podman or hijacks the host's route.

Safety: a relay or fetch host the lab would stand in for must be an address or name that
belongs to nobody (RFC 5737 documentation ranges, RFC 2606 reserved names), else
:func:`plan_lab` refuses the site with an :class:`~mailstack.errors.InputError` naming the
site file's line.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, cast

from mailstack.errors import InputError, ToolError
from mailstack.findings import Finding, raise_errors
from mailstack.plan import web
from mailstack.site.model import Site

__all__ = [
    "CLIENT_HOSTNAME",
    "DOC_NETWORKS",
    "LAB_POOL",
    "PROVIDER_HOSTNAME",
    "RESERVED_SUFFIXES",
    "STARTS",
    "LabContainer",
    "LabPlan",
    "Role",
    "Start",
    "acme_host",
    "fixture_id",
    "plan_lab",
    "provider_hosts",
    "relay_name_ok",
]

Role = Literal["host", "relay", "provider", "client"]
Start = Literal["prepared", "bare", "handmade"]
STARTS: tuple[Start, ...] = ("prepared", "bare", "handmade")
"""How the site's hosts start (``lab up --start``): ``prepared``, the lab image with the mail
daemons' packages installed by its recipe (fast); ``bare``, what a real server is (minbase +
systemd + sshd + python3 + sudo, apt on a local repository only); ``handmade``, a server that
already runs a mail stack set up by hand (Debian's Postfix as "Internet Site", Dovecot's stock
conf.d, mail in /var/mail), which apply must not take over unasked."""

DOC_NETWORKS = tuple(
    ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
"""RFC 5737: the only IP addresses a lab relay may have."""

RESERVED_SUFFIXES = (".example", ".test", ".invalid", ".localhost")
RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
"""RFC 2606: a lab relay's host name ends in one of these (or is, or ends in, a domain)."""

LAB_POOL = ipaddress.IPv4Network("10.89.128.0/17")
"""Where lab subnets come from (podman numbers its own networks from 10.89.0.0/24 up)."""

HOST_FIRST = 10
CLIENT_OCTET = 100
PROVIDER_OCTET = 150
RELAY_FIRST = 200
GATEWAY_OCTET = 254
CLIENT_HOSTNAME = "client.lab.test"
PROVIDER_HOSTNAME = "provider.lab.test"
"""The provider's host name when none of its names is a host name (all are IP addresses)."""
PROVIDER_SMTP_PORTS = ((465, "smtps"), (587, "smtp"))
"""What the provider always listens on for mail: 465 TLS from the first byte, 587 STARTTLS
(a relay of the site that names one of these ports with the other mode wins)."""

_CONTAINER_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")

_DOC_TEXT = "192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24 (RFC 5737)"
_NAME_TEXT = (
    ".example, .test, .invalid, .localhost, example.com, example.net or example.org (RFC 2606)"
)
_WHY = "the lab only stands in for relays that cannot be a real server"


@dataclass(frozen=True)
class LabContainer:
    """One container of the lab."""

    name: str
    role: Role
    key: str
    """The site host's key, the relay's name, ``provider`` or ``client``."""
    hostname: str
    ip: str
    """Its address on the lab network."""
    aliases: tuple[str, ...] = ()
    """DNS names on the lab network (podman's aardvark answers A records only)."""
    pinned: tuple[str, ...] = ()
    """A relay's own addresses (outside the lab subnet) it answers on inside the lab."""
    port: int | None = None
    """A relay's SMTP port."""
    tls: str | None = None
    """A relay's tls mode (verify, encrypt, wrapper)."""
    tls_names: tuple[str, ...] = ()
    """Names (and IPs) the certificate of a relay or the provider carries."""
    stands_for: tuple[str, ...] = ()
    """Names of the site's relays this container answers for (a relay: its own name)."""
    listens: tuple[str, ...] = ()
    """``KIND:PORT`` it serves: ``smtp`` (STARTTLS offered; the provider requires it),
    ``smtps`` (TLS from the first byte), ``imaps``, ``pop3s``."""
    mailboxes: tuple[str, ...] = ()
    """The provider's logins: every relay ``auth.user`` and ``fetch`` user it answers for."""

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "key": self.key,
            "hostname": self.hostname,
            "ip": self.ip,
            "aliases": list(self.aliases),
            "pinned": list(self.pinned),
            "port": self.port,
            "tls": self.tls,
            "tls_names": list(self.tls_names),
            "stands_for": list(self.stands_for),
            "listens": list(self.listens),
            "mailboxes": list(self.mailboxes),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LabContainer:
        return cls(
            name=str(data["name"]),
            role=data["role"],  # type: ignore[arg-type]
            key=str(data["key"]),
            hostname=str(data["hostname"]),
            ip=str(data["ip"]),
            aliases=tuple(data.get("aliases") or ()),  # type: ignore[arg-type]
            pinned=tuple(data.get("pinned") or ()),  # type: ignore[arg-type]
            port=data.get("port"),  # type: ignore[arg-type]
            tls=data.get("tls"),  # type: ignore[arg-type]
            tls_names=tuple(data.get("tls_names") or ()),  # type: ignore[arg-type]
            stands_for=tuple(data.get("stands_for") or ()),  # type: ignore[arg-type]
            listens=tuple(data.get("listens") or ()),  # type: ignore[arg-type]
            mailboxes=tuple(data.get("mailboxes") or ()),  # type: ignore[arg-type]
        )

    def ports(self, *kinds: str) -> tuple[int, ...]:
        """The ports of :attr:`listens` of these kinds (all kinds when none are given)."""
        out = []
        for item in self.listens:
            kind, _, port = item.partition(":")
            if not kinds or kind in kinds:
                out.append(int(port))
        return tuple(out)


@dataclass(frozen=True)
class LabPlan:
    """What the lab of one site consists of."""

    site: str
    network: str
    subnet: str
    gateway: str
    containers: tuple[LabContainer, ...] = field(default=())
    start: Start = "prepared"
    """How the site's hosts start: see :data:`STARTS`."""

    @property
    def hosts(self) -> tuple[LabContainer, ...]:
        return tuple(c for c in self.containers if c.role == "host")

    @property
    def relays(self) -> tuple[LabContainer, ...]:
        return tuple(c for c in self.containers if c.role == "relay")

    @property
    def client(self) -> LabContainer:
        return next(c for c in self.containers if c.role == "client")

    @property
    def provider(self) -> LabContainer | None:
        """The provider container, or None when the site needs none."""
        return next((c for c in self.containers if c.role == "provider"), None)

    @property
    def stand_ins(self) -> tuple[LabContainer, ...]:
        """The relay containers and the provider: what the lab puts in for the outside world."""
        return tuple(c for c in self.containers if c.role in ("relay", "provider"))

    def host(self, key: str) -> LabContainer:
        for c in self.hosts:
            if c.key == key:
                return c
        raise KeyError(f"no site host {key!r} in the lab of {self.site}")

    def relay(self, name: str) -> LabContainer:
        """The container that answers for the site's relay ``name``: its relay container or
        the provider."""
        for c in self.stand_ins:
            if name in c.stands_for or (c.role == "relay" and c.key == name):
                return c
        raise KeyError(f"no relay {name!r} in the lab of {self.site}")

    def to_json(self) -> dict[str, object]:
        return {
            "site": self.site,
            "network": self.network,
            "subnet": self.subnet,
            "gateway": self.gateway,
            "containers": [c.to_json() for c in self.containers],
            "start": self.start,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LabPlan:
        return cls(
            site=str(data["site"]),
            network=str(data["network"]),
            subnet=str(data["subnet"]),
            gateway=str(data["gateway"]),
            containers=tuple(
                LabContainer.from_json(c)
                for c in cast(list[dict[str, object]], data["containers"])
            ),
            start=data.get("start") or "prepared",  # type: ignore[arg-type]
        )


def relay_name_ok(name: str) -> bool:
    """True for an RFC 2606 name: .example/.test/.invalid/.localhost or example.com/net/org."""
    name = name.lower().rstrip(".")
    if name.endswith(RESERVED_SUFFIXES) and not name.startswith("."):
        return True
    return any(name == d or name.endswith("." + d) for d in RESERVED_DOMAINS)


def _as_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _label(text: str) -> str:
    """A DNS label from a relay's name: lowercase, other characters as '-'."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:63] or "relay"


def _pick_subnet(site: str, taken: Iterable[str | ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    used = [ipaddress.ip_network(t, strict=False) for t in taken]
    subnets = list(LAB_POOL.subnets(new_prefix=24))
    start = int.from_bytes(hashlib.sha256(site.encode()).digest()[:4], "big") % len(subnets)
    for i in range(len(subnets)):
        candidate = subnets[(start + i) % len(subnets)]
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise ToolError(f"no free /24 left in {LAB_POOL} for the lab network of site {site}")


def provider_hosts(site: Site) -> tuple[str, ...]:
    """Host names (lowercase, no trailing dot) the provider answers for: every relay with
    ``auth`` and every ``fetch`` host, in site order."""
    hosts = [_norm(r.host) for r in site.relays.values() if r.auth]
    hosts += [_norm(f.host) for f in site.fetch]
    return tuple(dict.fromkeys(hosts))


def acme_host(site: Site) -> str | None:
    """The host name of the site's ACME server (tls.acme.server), lowercase, or None."""
    from urllib.parse import urlsplit

    if site.tls.acme is None:
        return None
    return (urlsplit(site.tls.acme.server).hostname or "").lower() or None


def fixture_id(c: LabContainer) -> str:
    """Short name of a stand-in for files about it: ``relay-<name>`` or ``provider``."""
    return "provider" if c.role == "provider" else f"{c.role}-{c.key}"


def _norm(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _relay_kind(tls: str | None) -> str:
    return "smtps" if tls == "wrapper" else "smtp"


def plan_lab(site: Site, *, taken: Iterable[str | ipaddress.IPv4Network] = (),
             start: Start = "prepared") -> LabPlan:
    """The lab of ``site``; refuse (InputError) a site whose relays the lab must not stand in for.

    ``start``: how the site's hosts start (:data:`STARTS`).
    ``taken``: subnets already in use (other podman networks, the host's routes); the lab
    subnet avoids them. Without it the result depends on the site name alone.
    """
    findings: list[Finding] = []

    def refuse(path: tuple[str | int, ...], message: str) -> None:
        findings.append(Finding(site.marks.at(path), path, message))

    prefix = f"mailstack-{site.site}"
    for key in site.hosts:
        if not _CONTAINER_PART.match(key):
            refuse(("hosts", key), f"host name '{key}' cannot be part of a container name "
                                   "(letters, digits, '_', '.', '-'; not first: '_', '.', '-')")

    at_provider = provider_hosts(site)  # ordered: the first name is the provider's own
    first_net: tuple[str, ipaddress.IPv4Network] | None = None

    def safe(path: tuple[str | int, ...], what: str, host: str) -> bool:
        """Refuse a host that could be a real server; keep IP hosts in one /24."""
        nonlocal first_net
        ip = _as_ip(host)
        if ip is not None:
            if ip.version != 4 or not any(ip in n for n in DOC_NETWORKS):
                refuse(path, f"{what} host {host} is not in a documentation range "
                             f"{_DOC_TEXT}: {_WHY}")
                return False
            net = ipaddress.IPv4Network(f"{ip}/24", strict=False)
            if first_net is None:
                first_net = (what, net)
            elif net != first_net[1]:
                refuse(path, f"{what} host {host} is not in {first_net[1]}, the /24 of "
                             f"{first_net[0]}: the lab keeps all relays named by IP "
                             "address in one /24")
                return False
        elif not relay_name_ok(host):
            refuse(path, f"{what} host {host} is not a reserved example name "
                         f"{_NAME_TEXT}: {_WHY}")
            return False
        return True

    owners: dict[str, str] = {}
    provider_ports: dict[int, tuple[str, str]] = {}  # port -> (kind, who asked for it)
    for name, relay in site.relays.items():
        path = ("relays", name, "host")
        host = relay.host.strip()
        if not _CONTAINER_PART.match(name):
            refuse(("relays", name), f"relay name '{name}' cannot be part of a container name "
                                     "(letters, digits, '_', '.', '-'; not first: '_', '.', '-')")
        if not safe(path, f"relay '{name}'", host):
            continue
        norm = _norm(host)
        if norm in at_provider:
            kind = _relay_kind(relay.tls)
            had = provider_ports.setdefault(relay.port, (kind, f"relay '{name}'"))
            if had[0] != kind:
                refuse(("relays", name, "port"),
                       f"relay '{name}' wants {'TLS from the first byte' if kind == 'smtps' else 'STARTTLS'} "
                       f"on port {relay.port} of the lab's provider, where {had[1]} wants "
                       f"{'TLS from the first byte' if had[0] == 'smtps' else 'STARTTLS'}")
            continue
        if norm in owners:
            refuse(path, f"relay '{name}' host {host} is also the host of relay "
                         f"'{owners[norm]}': the lab gives each relay its own container")
            continue
        owners[norm] = name
    for i, fetch in enumerate(site.fetch):
        if not safe(("fetch", i, "host"), f"fetch[{i}]", fetch.host.strip()):
            continue
        kind = "pop3s" if fetch.protocol == "pop3" else "imaps"
        port = fetch.port or (995 if fetch.protocol == "pop3" else 993)
        had = provider_ports.setdefault(port, (kind, f"fetch[{i}]"))
        if had[0] != kind:
            refuse(("fetch", i, "port" if fetch.port else "protocol"),
                   f"fetch[{i}] wants {kind} on port {port} of the lab's provider, where "
                   f"{had[1]} wants {had[0]}")
    # Direct delivery looks up MX records: podman's DNS forwards unknown names to the host's
    # resolvers even on an --internal network, so a lab must never be asked to deliver direct.
    if site.relay.default == "direct":
        refuse(("relay", "default"), "the lab cannot stand in for direct delivery (it would look "
                                     "up MX records outside the lab): name a relay")
    for section in ("recipients", "senders"):
        for key, relay_name in getattr(site.routes, section).items():
            if relay_name == "direct":
                refuse(("routes", section, key), "the lab cannot stand in for direct delivery "
                                                 "(it would look up MX records outside the lab)")
    acme = acme_host(site)
    if site.tls.mode == "acme" and acme is not None and not relay_name_ok(acme):
        refuse(("tls", "acme", "server"), f"the ACME server {acme} is not a reserved example "
                                          f"name {_NAME_TEXT}: the lab stands in for it (pebble "
                                          "in the client), and certbot must never ask a real CA")
    raise_errors(findings)

    subnet = _pick_subnet(site.site, taken)
    base = subnet.network_address

    def addr(octet: int) -> str:
        return str(base + octet)

    containers: list[LabContainer] = []
    if len(site.hosts) > CLIENT_OCTET - HOST_FIRST:
        hosts_path: tuple[str | int, ...] = ("hosts",)
        raise InputError(str(Finding(site.marks.at(hosts_path), hosts_path,
                                     f"the lab holds at most {CLIENT_OCTET - HOST_FIRST} hosts")))
    for i, (key, site_host) in enumerate(site.hosts.items()):
        fqdn = site_host.hostname.rstrip(".")
        # the host that serves client settings answers autoconfig.<domain> and
        # autodiscover.<domain> too (the DNS records a real site points at it)
        extra = web.client_names(site) if web.serving_host(site) == key else ()
        containers.append(LabContainer(
            name=f"{prefix}-{key}", role="host", key=key, hostname=fqdn,
            ip=addr(HOST_FIRST + i), aliases=(fqdn, *extra),
        ))
    own_relays = [(n, r) for n, r in site.relays.items() if _norm(r.host) not in at_provider]
    for i, (name, relay) in enumerate(own_relays):
        host = relay.host.strip().rstrip(".")
        is_ip = _as_ip(host) is not None
        hostname = f"{_label(name)}.relay.lab.test" if is_ip else host.lower()
        names = [n for n in (relay.tls_name, hostname) if n]
        tls_names = tuple(dict.fromkeys([*names, host]))
        containers.append(LabContainer(
            name=f"{prefix}-relay-{name}", role="relay", key=name, hostname=hostname,
            ip=addr(RELAY_FIRST + i),
            aliases=() if is_ip else (host.lower(),),
            pinned=(host,) if is_ip else (),
            port=relay.port, tls=relay.tls, tls_names=tls_names,
            stands_for=(name,), listens=(f"{_relay_kind(relay.tls)}:{relay.port}",),
        ))
    if at_provider:
        names = [h for h in at_provider if _as_ip(h) is None]
        pinned = [h for h in at_provider if _as_ip(h) is not None]
        served = tuple(n for n, r in site.relays.items() if _norm(r.host) in at_provider)
        provider_tls_names = [t.lower() for t in (site.relays[n].tls_name for n in served) if t]
        ports = dict(PROVIDER_SMTP_PORTS)
        ports.update({p: kind for p, (kind, _) in provider_ports.items()})
        mailboxes = [r.auth.user for r in site.relays.values()
                     if r.auth and _norm(r.host) in at_provider]
        mailboxes += [f.user for f in site.fetch]
        containers.append(LabContainer(
            name=f"{prefix}-provider", role="provider", key="provider",
            hostname=names[0] if names else PROVIDER_HOSTNAME, ip=addr(PROVIDER_OCTET),
            aliases=tuple(names), pinned=tuple(pinned),
            tls_names=tuple(dict.fromkeys([*names, *provider_tls_names, *pinned])),
            stands_for=served,
            listens=tuple(f"{kind}:{port}" for port, kind in sorted(ports.items())),
            mailboxes=tuple(dict.fromkeys(mailboxes)),
        ))
    containers.append(LabContainer(
        name=f"{prefix}-client", role="client", key="client", hostname=CLIENT_HOSTNAME,
        ip=addr(CLIENT_OCTET),
        # tls.mode acme: the client runs the ACME server (pebble) under the site's name for it
        aliases=(acme,) if site.tls.mode == "acme" and acme else (),
    ))

    seen: dict[str, str] = {}
    for c in containers:
        for taken_name in (c.name, *c.aliases):
            other = seen.get(taken_name.lower())
            if other is not None:
                where = {"host": ("hosts", c.key), "relay": ("relays", c.key)}.get(
                    c.role, ("fetch",))
                raise InputError(str(Finding(site.marks.at(where), where, f"'{taken_name}' is "
                                             f"already the name of the lab's {other}")))
            seen[taken_name.lower()] = f"{c.role} '{c.key}'"

    return LabPlan(
        site=site.site, network=prefix, subnet=str(subnet),
        gateway=addr(GATEWAY_OCTET), containers=tuple(containers), start=start,
    )
