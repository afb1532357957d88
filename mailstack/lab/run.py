"""Bring a site's lab up and down with podman; snapshot and restore its site hosts.

Everything goes through :mod:`mailstack.container` (``Container.start``, ``exec``,
``put_file``, ``commit``, ``remove_image``). The network is ``--internal``: containers reach
each other and the host reaches them, but nothing in it reaches anything outside.

A relay named by IP address (e.g. 192.0.2.1) is *pinned*: the relay container carries that
address as an extra /32, and every other container routes it on-link to the relay's MAC address
(a permanent neighbour entry), so the address is answered inside the lab only. Adding
addresses and routes needs CAP_NET_ADMIN, which ``podman exec --privileged`` grants to that one
command; the containers themselves run with the usual capabilities.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mailstack import container as podman
from mailstack.container import IMAGE, Container, commit, image_exists, remove_image
from mailstack.errors import InputError, ToolError
from mailstack.lab import relay as relay_fixture
from mailstack.lab.plan import LabContainer, LabPlan, plan_lab
from mailstack.lab.state import (
    INVENTORY,
    KEY,
    LabState,
    lab_dir,
    read_state,
    render_inventory,
    write_atomic,
)
from mailstack.site.load import load_site
from mailstack.site.model import Site

__all__ = [
    "SNAPSHOT_REPO",
    "clear_relay_messages",
    "down",
    "relay_log",
    "relay_messages",
    "restore",
    "snapshot",
    "snapshot_image",
    "state",
    "up",
]

SNAPSHOT_REPO = "localhost/mailstack-snap"
SSH_TIMEOUT = 30.0
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
T = TypeVar("T")
R = TypeVar("R")


# -- small helpers -----------------------------------------------------------------------

def _podman(args: Sequence[str], *, what: str, check: bool = True,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return podman._podman(args, what=what, check=check, timeout=timeout)


def _parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]`` in threads (podman calls are subprocesses); first error wins."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(len(items), 8)) as pool:
        futures = [pool.submit(fn, x) for x in items]
        errors = [f.exception() for f in futures]
        for err in errors:
            if err is not None:
                raise err
        return [f.result() for f in futures]


def _load(site_file: str | os.PathLike[str]) -> Site:
    return load_site(site_file)


def _require_podman() -> None:
    if not podman.podman_available():
        raise ToolError("the lab needs podman: it is missing or does not answer "
                        "(run scripts/install-host-deps.sh as root, or `make host`)")
    if not image_exists(IMAGE):
        raise ToolError(f"the lab needs the image {IMAGE}: run scripts/build-image.sh "
                        "(or `make image`)")


def _require_ssh() -> str:
    ssh = shutil.which("ssh")
    if ssh is None:
        raise ToolError("the lab needs an SSH client on this machine (ssh not found): install "
                        "the Debian package openssh-client (apt-get install -y openssh-client)")
    return ssh


def _inspect_container(name: str) -> dict[str, Any] | None:
    proc = _podman(["container", "inspect", name], what=f"inspecting container {name}",
                   check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout)
    return data[0] if data else None


def _networks() -> list[dict[str, Any]]:
    proc = _podman(["network", "ls", "--format", "json"], what="listing podman networks")
    return list(json.loads(proc.stdout or "[]"))


def _subnets(net: dict[str, Any]) -> list[str]:
    return [s["subnet"] for s in net.get("subnets") or [] if s.get("subnet")]


def _host_routes() -> list[str]:
    """IPv4 destinations the host routes to (not the default route), from /proc/net/route."""
    out: list[str] = []
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        if int(mask) == 0:
            continue
        out.append(str(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)))
    return out


def _plan_for_up(site: Site) -> LabPlan:
    """The plan, with a subnet that is free on this host (its own network's subnet counts as
    free, so a re-run keeps it)."""
    network = f"mailstack-{site.site}"
    nets = _networks()
    own = [s for n in nets if n.get("name") == network for s in _subnets(n)]
    taken = [s for n in nets if n.get("name") != network for s in _subnets(n)]
    taken += [r for r in _host_routes() if r not in own]
    return plan_lab(site, taken=taken)


# -- network -----------------------------------------------------------------------------

def _ensure_network(plan: LabPlan, known_names: Iterable[str]) -> None:
    current = next((n for n in _networks() if n.get("name") == plan.network), None)
    if current is not None:
        subnets = current.get("subnets") or []
        same = (
            current.get("internal") is True
            and len(subnets) == 1
            and subnets[0].get("subnet") == plan.subnet
            and subnets[0].get("gateway") == plan.gateway
        )
        if same:
            return
        # Made by an older plan: take it down with our containers and make it anew.
        _remove_containers(plan, known_names)
        _podman(["network", "rm", plan.network], what=f"removing network {plan.network}")
    _podman(
        ["network", "create", "--internal", "--subnet", plan.subnet, "--gateway", plan.gateway,
         plan.network],
        what=f"creating the lab network {plan.network} ({plan.subnet})",
    )


def _attached(network: str, prefix: str) -> list[str]:
    """Names of containers on ``network`` whose names start with ``prefix``."""
    proc = _podman(["ps", "-a", "--filter", f"network={network}", "--format", "{{.Names}}"],
                   what=f"listing containers of network {network}", check=False)
    if proc.returncode != 0:
        return []
    return [n for n in proc.stdout.split() if n.startswith(prefix)]


def _remove_containers(plan: LabPlan, known_names: Iterable[str] = ()) -> list[str]:
    prefix = f"{plan.network}-"
    names = list(dict.fromkeys([*(c.name for c in plan.containers), *known_names,
                                *_attached(plan.network, prefix)]))
    existing = set(_podman(["ps", "-a", "--format", "{{.Names}}"],
                           what="listing containers").stdout.split())
    names = [n for n in names if n.startswith(prefix) and n in existing]
    _parallel(lambda n: Container(n).remove(), names)
    return names


# -- containers --------------------------------------------------------------------------

def _matches(info: dict[str, Any], plan: LabPlan, c: LabContainer) -> bool:
    if not (info.get("State") or {}).get("Running"):
        return False
    if (info.get("Config") or {}).get("Hostname") != c.hostname:
        return False
    net = ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(plan.network)
    if not net or net.get("IPAddress") != c.ip:
        return False
    return set(c.aliases) <= set(net.get("Aliases") or [])


def _ensure_container(plan: LabPlan, c: LabContainer, image: str = IMAGE) -> bool:
    """Start ``c`` unless a matching one runs; True when it was (re)started."""
    info = _inspect_container(c.name)
    if info is not None and _matches(info, plan, c):
        return False
    if info is not None:
        Container(c.name).remove()
    _start(plan, c, image)
    return True


def _start(plan: LabPlan, c: LabContainer, image: str) -> None:
    Container.start(c.name, hostname=c.hostname, network=plan.network, ip=c.ip,
                    aliases=c.aliases, image=image)


def _mac(plan: LabPlan, c: LabContainer) -> str:
    info = _inspect_container(c.name) or {}
    net = ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(plan.network) or {}
    mac = net.get("MacAddress")
    if not mac:
        raise ToolError(f"container {c.name} has no MAC address on network {plan.network}")
    return str(mac)


# Runs as `python3 -c _WIRE JSON` with CAP_NET_ADMIN/CAP_NET_RAW (podman exec --privileged).
# JSON: {"ip": lab address, "pin": [addresses this relay answers on], "routes": [[address,
# relay MAC], ...]}. Then a gratuitous ARP: a container recreated at the same address (restore)
# has a new MAC, and the host and the other containers would keep sending to the old one for
# up to ~30 s (SSH from the host hung 20 s before this).
_WIRE = r"""
import ipaddress, json, socket, subprocess, sys
want = json.loads(sys.argv[1])
dev = None
for line in subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                           check=True).stdout.splitlines():
    f = line.split()
    if f[3].split("/")[0] == want["ip"]:
        dev = f[1]
        break
if dev is None:
    sys.exit(f"no interface holds {want['ip']}")
def ip(*args):
    subprocess.run(["ip", *args], check=True)
for a in want["pin"]:
    ip("addr", "replace", f"{a}/32", "dev", dev)
for a, mac in want["routes"]:
    ip("route", "replace", f"{a}/32", "dev", dev, "src", want["ip"])
    ip("neigh", "replace", a, "lladdr", mac, "dev", dev, "nud", "permanent")
mac = bytes.fromhex(open(f"/sys/class/net/{dev}/address").read().strip().replace(":", ""))
addr = ipaddress.IPv4Address(want["ip"]).packed
arp = (b"\x00\x01\x08\x00\x06\x04\x00\x01" + mac + addr + b"\x00" * 6 + addr)
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
    s.bind((dev, 0))
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
"""


def _wire(plan: LabPlan, targets: Iterable[LabContainer]) -> None:
    """Pin the relays' own addresses inside the lab and announce each target's MAC address.

    A relay container carries its pinned addresses as /32s; every other container routes
    them on-link to the relay's MAC (a permanent neighbour entry), so they are answered by
    the relay and never leave the lab. Needs CAP_NET_ADMIN, granted to this one command by
    ``podman exec --privileged`` (Container.exec has no such option).
    """
    routes = [[address, _mac(plan, r)] for r in plan.relays for address in r.pinned]

    def wire(c: LabContainer) -> None:
        want = {
            "ip": c.ip,
            "pin": list(c.pinned) if c.role == "relay" else [],
            "routes": routes if c.role != "relay" else [],
        }
        _podman(["exec", "--privileged", c.name, "python3", "-c", _WIRE, json.dumps(want)],
                what=f"wiring relay addresses in container {c.name}")

    _parallel(wire, targets)


# -- SSH ---------------------------------------------------------------------------------

def _ensure_key(where: Path, site: str) -> tuple[Path, str]:
    """The lab's ed25519 key pair (made once); returns (private key path, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = where / KEY
    pub = where / f"{KEY}.pub"
    if key.is_file() and pub.is_file():
        os.chmod(key, 0o600)
        return key, pub.read_text(encoding="utf-8").strip()
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    line = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()
    line = f"{line} mailstack-lab-{site}"
    write_atomic(key, pem, 0o600)
    write_atomic(pub, line + "\n", 0o644)
    return key, line


def _authorize(c: LabContainer, public_key: str) -> None:
    box = Container(c.name)
    box.exec(["install", "-d", "-m", "0700", "/root/.ssh"], check=True)
    box.put_file("/root/.ssh/authorized_keys", public_key + "\n", 0o600)


def ssh_argv(key: Path, ip: str, *command: str, timeout: int = 5) -> list[str]:
    """``ssh`` as the lab's Ansible inventory uses it (root, the lab key, no host key checks)."""
    return [
        "ssh", "-F", "/dev/null", "-i", str(key), "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-o", f"ConnectTimeout={timeout}", f"root@{ip}", *command,
    ]


def _wait_ssh(c: LabContainer, key: Path, timeout: float = SSH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            proc = subprocess.run(ssh_argv(key, c.ip, "true"), capture_output=True, text=True,
                                  timeout=15, check=False)
            if proc.returncode == 0:
                return
            last = (proc.stderr or proc.stdout).strip()
        except subprocess.TimeoutExpired:
            last = "ssh did not answer within 15 s"
        if time.monotonic() >= deadline:
            raise ToolError(f"ssh -i {key} root@{c.ip} (container {c.name}) does not work "
                            f"after {timeout:g} s:\n  {last}")
        time.sleep(0.5)


# -- public API --------------------------------------------------------------------------

def up(site_file: str | os.PathLike[str], *, build_dir: str | os.PathLike[str] = "build"
       ) -> LabState:
    """Bring up the lab of ``site_file`` (idempotent); return its state.

    Creates the internal network, starts the containers that do not already run as planned,
    installs the lab's SSH key in the site hosts, configures the relay fixtures, writes
    ``build/<site>/lab/{inventory.yml,lab.json,id_ed25519}`` and checks SSH to every site host.
    """
    site = _load(site_file)
    plan_lab(site)  # refuse an unsafe site before anything runs
    _require_ssh()
    _require_podman()
    where = lab_dir(build_dir, site.site)
    previous = _safe_read_state(where)
    plan = _plan_for_up(site)
    known = [c.name for c in previous.containers] if previous else []
    # Containers of an older plan that this plan no longer has.
    stale = [n for n in known if n not in {c.name for c in plan.containers}]
    _parallel(lambda n: Container(n).remove(), stale)

    where.mkdir(parents=True, exist_ok=True)
    os.chmod(where, 0o700)
    key, public_key = _ensure_key(where, site.site)

    _ensure_network(plan, known)
    _parallel(lambda c: _ensure_container(plan, c), plan.containers)
    _wire(plan, plan.containers)
    _parallel(lambda c: _authorize(c, public_key), plan.hosts)

    certs = _parallel(lambda r: relay_fixture.configure(plan, r), plan.relays)
    relay_certs: dict[str, Path] = {}
    for r, pem in zip(plan.relays, certs, strict=True):
        path = where / f"relay-{r.key}.crt"
        write_atomic(path, pem)
        relay_certs[r.key] = path

    inventory = where / INVENTORY
    write_atomic(inventory, render_inventory(plan, key))
    lab = LabState(plan=plan, lab_dir=where, inventory=inventory, key=key,
                   relay_certs=relay_certs)
    lab.write()
    _parallel(lambda c: _wait_ssh(c, key), plan.hosts)
    return lab


def _safe_read_state(where: Path) -> LabState | None:
    try:
        return read_state(where)
    except ToolError:
        return None


def state(site_file: str | os.PathLike[str], *, build_dir: str | os.PathLike[str] = "build"
          ) -> LabState:
    """The state recorded by the last ``up`` of this site's lab (ToolError if none)."""
    site = _load(site_file)
    where = lab_dir(build_dir, site.site)
    lab = read_state(where)
    if lab is None:
        raise ToolError(f"no lab is up for site {site.site} ({where / 'lab.json'} is missing): "
                        f"run `mailstack lab up {site_file}`")
    return lab


def down(site_file: str | os.PathLike[str], *, build_dir: str | os.PathLike[str] = "build",
         keep_snapshots: bool = False) -> list[str]:
    """Remove the lab's containers, its network, ``build/<site>/lab`` and (unless
    ``keep_snapshots``) its snapshot images. Idempotent; returns the containers removed."""
    site = _load(site_file)
    where = lab_dir(build_dir, site.site)
    previous = _safe_read_state(where)
    network = f"mailstack-{site.site}"
    known = [c.name for c in previous.containers] if previous else []
    host_keys = set(site.hosts) | ({c.key for c in previous.hosts} if previous else set())
    try:
        plan = plan_lab(site)
    except InputError:  # the site was edited into something the lab refuses: use the record
        plan = previous.plan if previous else LabPlan(site.site, network, "", "", ())
    removed = _remove_containers(plan, known)
    nets = [n for n in _networks() if n.get("name") == network]
    if nets:
        leftover = _podman(["ps", "-a", "--filter", f"network={network}",
                            "--format", "{{.Names}}"],
                           what=f"listing containers of network {network}").stdout.split()
        if leftover:
            raise ToolError(f"network {network} still has containers that are not the lab's: "
                            f"{', '.join(leftover)}; remove them first")
        _podman(["network", "rm", network], what=f"removing network {network}")
    if not keep_snapshots:
        for image in _snapshot_images(site.site, host_keys):
            remove_image(image)
    if where.is_dir():
        shutil.rmtree(where)
    return removed


def snapshot_image(site: str, host: str, tag: str) -> str:
    """``localhost/mailstack-snap:<site>-<host>-<tag>``."""
    return f"{SNAPSHOT_REPO}:{site}-{host}-{tag}"


def _check_tag(tag: str) -> None:
    if not _TAG.match(tag) or len(tag) > 64:
        raise InputError(f"snapshot tag {tag!r}: use letters, digits, '_', '.', '-' "
                         "(not first: '.', '-'), at most 64")


def _snapshot_images(site: str, host_keys: Iterable[str]) -> list[str]:
    proc = _podman(["images", "--format", "{{.Repository}}:{{.Tag}}", SNAPSHOT_REPO],
                   what="listing snapshot images", check=False)
    prefixes = tuple(f"{SNAPSHOT_REPO}:{site}-{h}-" for h in host_keys)
    return [i for i in proc.stdout.split() if prefixes and i.startswith(prefixes)]


def snapshot(site_file: str | os.PathLike[str], tag: str, *,
             build_dir: str | os.PathLike[str] = "build") -> dict[str, str]:
    """``podman commit`` every site host container as :func:`snapshot_image`; returns
    host key -> image. Relays and the client are not snapshotted."""
    _check_tag(tag)
    lab = state(site_file, build_dir=build_dir)
    images = {c.key: snapshot_image(lab.site, c.key, tag) for c in lab.hosts}
    for c in lab.hosts:  # flush what the daemons wrote before the file system is copied
        Container(c.name).exec(["sync"])
    _parallel(lambda c: commit(c.name, images[c.key]), lab.hosts)
    return images


def restore(site_file: str | os.PathLike[str], tag: str, *,
            build_dir: str | os.PathLike[str] = "build", clear_relays: bool = True
            ) -> LabState:
    """Recreate every site host container from its snapshot ``tag`` (same name, host name,
    address, aliases), pin the relay addresses again, wait for SSH. With ``clear_relays`` the
    relays' sink Maildirs and logs are emptied too."""
    _check_tag(tag)
    lab = state(site_file, build_dir=build_dir)
    images = {c.key: snapshot_image(lab.site, c.key, tag) for c in lab.hosts}
    missing = [image for image in images.values() if not image_exists(image)]
    if missing:
        raise ToolError(f"no snapshot {tag!r} of the lab of {lab.site}: {', '.join(missing)} "
                        "missing (take one with lab.snapshot first)")

    def recreate(c: LabContainer) -> None:
        Container(c.name).remove()
        _start(lab.plan, c, images[c.key])

    _parallel(recreate, lab.hosts)
    _wire(lab.plan, lab.hosts)
    if clear_relays:
        _parallel(relay_fixture.clear_messages, lab.relays)
    _parallel(lambda c: _wait_ssh(c, lab.key), lab.hosts)
    return lab


def _relay(site_file: str | os.PathLike[str], relay_name: str,
           build_dir: str | os.PathLike[str]) -> LabContainer:
    lab = state(site_file, build_dir=build_dir)
    try:
        return lab.relay(relay_name)
    except KeyError:
        names = ", ".join(r.key for r in lab.relays) or "none"
        raise InputError(f"the lab of {lab.site} has no relay {relay_name!r} "
                         f"(relays: {names})") from None


def relay_messages(site_file: str | os.PathLike[str], relay_name: str, *,
                   build_dir: str | os.PathLike[str] = "build") -> list[str]:
    """Raw messages kept by the relay fixture ``relay_name`` (its sink Maildir), oldest first."""
    return relay_fixture.messages(_relay(site_file, relay_name, build_dir))


def clear_relay_messages(site_file: str | os.PathLike[str], relay_name: str, *,
                         build_dir: str | os.PathLike[str] = "build") -> None:
    """Empty the relay fixture's sink Maildir and its mail log."""
    relay_fixture.clear_messages(_relay(site_file, relay_name, build_dir))


def relay_log(site_file: str | os.PathLike[str], relay_name: str, *,
              build_dir: str | os.PathLike[str] = "build") -> str:
    """The relay fixture's Postfix log (/var/log/mail.log: ``from=``, ``status=`` lines)."""
    return relay_fixture.read_log(_relay(site_file, relay_name, build_dir))
