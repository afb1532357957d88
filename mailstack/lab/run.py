"""Bring a site's lab up and down with podman; snapshot and restore its site hosts.

Everything goes through :mod:`mailstack.container` (``Container.start``, ``exec``,
``put_file``, ``commit``, ``remove_image``). The network is ``--internal``: containers reach
each other and the host reaches them, but nothing in it reaches anything outside.

A relay named by IP address (e.g. 192.0.2.1) is *pinned*: the relay container (or the
provider, for a relay it answers for) carries that address as an extra /32, and every other
container routes it on-link to that container's MAC address (a permanent neighbour entry), so
the address is answered inside the lab only. Adding
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
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mailstack import container as podman
from mailstack import resources
from mailstack import secrets as site_secrets
from mailstack.container import BARE_IMAGE, IMAGE, Container, commit, image_exists, remove_image
from mailstack.errors import InputError, ToolError
from mailstack.lab import debs, fixture, handmade, outside, tls
from mailstack.lab import provider as provider_fixture
from mailstack.lab import relay as relay_fixture
from mailstack.lab.plan import STARTS, LabContainer, LabPlan, Start, fixture_id, plan_lab
from mailstack.lab.state import (
    INVENTORY,
    KEY,
    LabState,
    lab_dir,
    read_state,
    render_inventory,
    write_atomic,
)
from mailstack.plan.hosts import packages as host_packages
from mailstack.resources import lab_script as script
from mailstack.site.load import load_site
from mailstack.site.model import Site

__all__ = [
    "CLIENT_CA_DIR",
    "SNAPSHOT_REPO",
    "auth_usernames",
    "break_relay_certificate",
    "clear_provider_mailbox",
    "clear_provider_messages",
    "clear_relay_messages",
    "down",
    "ensure_outside_secrets",
    "prepare_outside_secrets",
    "provider_auth_attempts",
    "provider_log",
    "provider_mailbox",
    "provider_messages",
    "put_provider_message",
    "relay_auth_attempts",
    "relay_log",
    "relay_messages",
    "restore",
    "restore_relay_certificate",
    "set_provider_password",
    "setup",
    "snapshot",
    "snapshot_image",
    "state",
    "up",
]

SNAPSHOT_REPO = "localhost/mailstack-snap"
CLIENT_CA_DIR = "/etc/mailstack-lab/ca"
"""Where the client container finds the stand-ins' CA certificates: ``<fixture id>.crt``
(``relay-head-office.crt``, ``provider.crt``), for probes that verify them."""
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


def _require_podman(*, bare: bool = False) -> None:
    if not podman.podman_available():
        raise ToolError("the lab needs podman: it is missing or does not answer "
                        "(run `mailstack lab setup` as root)")
    if not image_exists(IMAGE):
        raise ToolError(f"the lab needs the image {IMAGE}: run `mailstack lab setup` "
                        "(or `make image`)")
    if bare and not image_exists(BARE_IMAGE):
        raise ToolError(f"bare lab hosts need the image {BARE_IMAGE}: run "
                        "`mailstack lab setup` (or `make image`)")


def setup() -> None:
    """Make this machine ready for the lab (root, Debian 12): podman and its configuration
    (install-host-deps.sh), the lab image and the bare image (build-image.sh). Each step is
    skipped within a second when it is done already; their progress goes to the terminal."""
    scripts = resources.LAB_SCRIPTS
    for argv in (["bash", str(scripts / "install-host-deps.sh")],
                 ["bash", str(scripts / "build-image.sh")],
                 ["bash", str(scripts / "build-image.sh"), "bare"]):
        try:
            rc = subprocess.run(argv, check=False, timeout=1800).returncode
        except subprocess.TimeoutExpired:
            raise ToolError(f"{' '.join(argv[1:])} did not finish within 30 minutes") from None
        if rc != 0:
            raise ToolError(f"lab setup failed: {' '.join(argv[1:])} exited with {rc}")


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


def _plan_for_up(site: Site, start: Start = "prepared") -> LabPlan:
    """The plan, with a subnet that is free on this host (its own network's subnet counts as
    free, so a re-run keeps it)."""
    network = f"mailstack-{site.site}"
    nets = _networks()
    own = [s for n in nets if n.get("name") == network for s in _subnets(n)]
    taken = [s for n in nets if n.get("name") != network for s in _subnets(n)]
    taken += [r for r in _host_routes() if r not in own]
    return plan_lab(site, taken=taken, start=start)


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

START_LABEL = "mailstack.start"
"""The podman label that records how a site host container started (plan.start)."""


def _boot(plan: LabPlan, c: LabContainer, debs_dir: Path | None
          ) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    """(image, read-only volumes, labels) of container ``c``: a site host starts as
    ``plan.start`` says (a bare one from the bare image with its apt repository at /debs);
    every other container from the lab image."""
    if c.role != "host":
        return IMAGE, [], {}
    labels: dict[str, str] = {START_LABEL: plan.start}
    if plan.start == "bare":
        if debs_dir is None:
            raise ToolError("a bare lab host needs its apt repository (lab up builds it)")
        return BARE_IMAGE, [(str(debs_dir), debs.MOUNT)], labels
    return IMAGE, [], labels


def _matches(info: dict[str, Any], plan: LabPlan, c: LabContainer) -> bool:
    if not (info.get("State") or {}).get("Running"):
        return False
    labels = (info.get("Config") or {}).get("Labels") or {}
    if c.role == "host" and labels.get(START_LABEL, "prepared") != plan.start:
        return False
    if (info.get("Config") or {}).get("Hostname") != c.hostname:
        return False
    net = ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(plan.network)
    if not net or net.get("IPAddress") != c.ip:
        return False
    return set(c.aliases) <= set(net.get("Aliases") or [])


def _ensure_container(plan: LabPlan, c: LabContainer, debs_dir: Path | None) -> bool:
    """Start ``c`` unless a matching one runs; True when it was (re)started."""
    info = _inspect_container(c.name)
    if info is not None and _matches(info, plan, c):
        return False
    if info is not None:
        Container(c.name).remove()
    _start(plan, c, debs_dir)
    return True


def _start(plan: LabPlan, c: LabContainer, debs_dir: Path | None, image: str | None = None
           ) -> None:
    """Start ``c`` as :func:`_boot` says, or from ``image`` (a snapshot) with the same volumes."""
    boot_image, volumes, labels = _boot(plan, c, debs_dir)
    Container.start(c.name, hostname=c.hostname, network=plan.network, ip=c.ip,
                    aliases=c.aliases, image=image or boot_image, volumes=volumes,
                    labels=labels)


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
_WIRE = script("wire.py")


def _wire(plan: LabPlan, targets: Iterable[LabContainer]) -> None:
    """Pin the relays' own addresses inside the lab and announce each target's MAC address.

    A relay container (or the provider) carries its pinned addresses as /32s; the site hosts
    and the client route them on-link to its MAC (a permanent neighbour entry), so they are
    answered by the stand-in and never leave the lab. Needs CAP_NET_ADMIN, granted to this one command by
    ``podman exec --privileged`` (Container.exec has no such option).
    """
    routes = [[address, _mac(plan, r)] for r in plan.stand_ins for address in r.pinned]

    def wire(c: LabContainer) -> None:
        want = {
            "ip": c.ip,
            "pin": list(c.pinned),
            "routes": routes if c.role not in ("relay", "provider") else [],
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

def up(site_file: str | os.PathLike[str], *, build_dir: str | os.PathLike[str] = "build",
       secrets_dir: str | os.PathLike[str] | None = None, start: Start = "prepared"
       ) -> LabState:
    """Bring up the lab of ``site_file`` (idempotent); return its state.

    Creates the internal network, starts the containers that do not already run as planned,
    installs the lab's SSH key in the site hosts, fills in the site's missing outside secrets
    (:func:`ensure_outside_secrets`; ``state.secrets_created``, ``state.warnings``),
    configures the relay and provider fixtures with certificates of their lab CAs, writes
    ``build/<site>/lab/{inventory.yml,lab.json,id_ed25519}`` and checks SSH to every site host.

    ``start`` says how the site's hosts start (:data:`~mailstack.lab.plan.STARTS`): ``bare``
    hosts get a local apt repository of their packages (:mod:`mailstack.lab.debs`), built on
    first use; ``handmade`` hosts are given a hand-made stack (:mod:`mailstack.lab.handmade`).
    """
    site = _load(site_file)
    if start not in STARTS:
        raise InputError(f"lab up: unknown start {start!r} (one of {', '.join(STARTS)})")
    plan_lab(site)  # refuse an unsafe site before anything runs
    _require_ssh()
    _require_podman(bare=start == "bare")
    where = lab_dir(build_dir, site.site)
    previous = _safe_read_state(where)
    plan = _plan_for_up(site, start)
    debs_dir = debs.repository(
        p for name in sorted(site.hosts) for p in host_packages(site, name)
    ) if start == "bare" else None
    report = _prepare_outside(site, plan, site_file, build_dir, secrets_dir)
    known = [c.name for c in previous.containers] if previous else []
    # Containers of an older plan that this plan no longer has.
    stale = [n for n in known if n not in {c.name for c in plan.containers}]
    _parallel(lambda n: Container(n).remove(), stale)

    where.mkdir(parents=True, exist_ok=True)
    os.chmod(where, 0o700)
    key, public_key = _ensure_key(where, site.site)
    certs = {fixture_id(c): tls.ensure_server_cert(where, fixture_id(c),
                                                   report.cas[fixture_id(c)], _cert_names(c))
             for c in plan.stand_ins}

    _ensure_network(plan, known)
    _parallel(lambda c: _ensure_container(plan, c, debs_dir), plan.containers)
    _wire(plan, plan.containers)
    _parallel(lambda c: _authorize(c, public_key), plan.hosts)
    if start == "handmade":
        _parallel(handmade.configure, plan.hosts)

    def configure(c: LabContainer) -> None:
        if c.role == "provider":
            provider_fixture.configure(c, certs["provider"], report.passwords)
        elif c.role == "relay":
            relay_fixture.configure(plan, c, certs[fixture_id(c)])
        else:  # the client: the stand-ins' CAs, for probes that verify them
            with tempfile.TemporaryDirectory(prefix="mailstack-lab-") as tmp:
                for ident, ca in report.cas.items():
                    Path(tmp, f"{ident}.crt").write_text(ca.cert, encoding="utf-8")
                Container(c.name).put_tree(tmp, CLIENT_CA_DIR)

    _parallel(configure, [*plan.stand_ins, plan.client])

    ca_root = tls.ca_dir(build_dir, site.site)
    relay_certs: dict[str, Path] = {}
    relay_cas: dict[str, Path] = {}
    for name in site.relays:
        ident = fixture_id(plan.relay(name))
        relay_certs[name] = where / f"{ident}.crt"
        relay_cas[name] = ca_root / f"{ident}-ca.crt"
    inventory = where / INVENTORY
    write_atomic(inventory, render_inventory(plan, key))
    lab = LabState(plan=plan, lab_dir=where, inventory=inventory, key=key,
                   relay_certs=relay_certs, relay_cas=relay_cas,
                   provider_ca=ca_root / "provider-ca.crt" if plan.provider else None,
                   debs=debs_dir, secrets_created=report.created, warnings=report.warnings)
    lab.write()
    _parallel(lambda c: _wait_ssh(c, key), plan.hosts)
    return lab


def _cert_names(c: LabContainer) -> tuple[str, ...]:
    return c.tls_names or (c.hostname,)


def _prepare_outside(site: Site, plan: LabPlan, site_file: str | os.PathLike[str],
                     build_dir: str | os.PathLike[str],
                     secrets_dir: str | os.PathLike[str] | None) -> outside.OutsideReport:
    root = Path(secrets_dir) if secrets_dir else site_secrets.default_dir(site_file)
    return outside.prepare(site, plan, site_secrets.SecretStore(root),
                           tls.ca_dir(build_dir, site.site))


def prepare_outside_secrets(site_file: str | os.PathLike[str], *,
                            build_dir: str | os.PathLike[str] = "build",
                            secrets_dir: str | os.PathLike[str] | None = None
                            ) -> outside.OutsideReport:
    """:func:`ensure_outside_secrets` with the whole report: also ``warnings`` (secrets that
    exist but do not fit the lab), the provider's passwords and the CAs."""
    site = _load(site_file)
    return _prepare_outside(site, plan_lab(site), site_file, build_dir, secrets_dir)


def ensure_outside_secrets(site_file: str | os.PathLike[str],
                           build_dir: str | os.PathLike[str] = "build", *,
                           secrets_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Write the site's missing outside secrets with the lab's values (see
    :mod:`mailstack.lab.outside`); return the names written. Needs no podman: run it before
    ``mailstack check``/``render`` of a site that is meant for the lab. The stand-ins' CAs are
    made (once) in ``BUILD_DIR/<site>/lab-ca``."""
    return list(prepare_outside_secrets(site_file, build_dir=build_dir,
                                        secrets_dir=secrets_dir).created)


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
    ``keep_snapshots``) its snapshot images. Idempotent; returns the containers removed.

    ``build/<site>/lab-ca`` stays, like the secrets the lab wrote from it: the next ``up``
    uses the same CAs, so a ``ca_secret`` it wrote before still matches."""
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
    relays' and the provider's sink Maildirs and logs are emptied too (not the provider's
    mailboxes: :func:`clear_provider_mailbox`)."""
    _check_tag(tag)
    lab = state(site_file, build_dir=build_dir)
    images = {c.key: snapshot_image(lab.site, c.key, tag) for c in lab.hosts}
    missing = [image for image in images.values() if not image_exists(image)]
    if missing:
        raise ToolError(f"no snapshot {tag!r} of the lab of {lab.site}: {', '.join(missing)} "
                        "missing (take one with lab.snapshot first)")

    def recreate(c: LabContainer) -> None:
        Container(c.name).remove()
        _start(lab.plan, c, lab.debs, images[c.key])

    _parallel(recreate, lab.hosts)
    _wire(lab.plan, lab.hosts)
    if clear_relays:
        _parallel(fixture.clear_sink, lab.stand_ins)
    _parallel(lambda c: _wait_ssh(c, lab.key), lab.hosts)
    return lab


def _relay(site_file: str | os.PathLike[str], relay_name: str,
           build_dir: str | os.PathLike[str]) -> LabContainer:
    return _relay_in(state(site_file, build_dir=build_dir), relay_name)


def _relay_in(lab: LabState, relay_name: str) -> LabContainer:
    try:
        return lab.relay(relay_name)
    except KeyError:
        names = ", ".join(n for c in lab.stand_ins for n in c.stands_for) or "none"
        raise InputError(f"the lab of {lab.site} has no relay {relay_name!r} "
                         f"(relays: {names})") from None


def _provider(site_file: str | os.PathLike[str], build_dir: str | os.PathLike[str]
              ) -> LabContainer:
    lab = state(site_file, build_dir=build_dir)
    if lab.provider is None:
        raise InputError(f"the lab of {lab.site} has no provider: the site names no relay "
                         "with auth and no fetch")
    return lab.provider


# -- relays: what they kept, what they saw ------------------------------------------------
# A relay the provider answers for (relay with auth) is the provider here: its sink, its log.

def relay_messages(site_file: str | os.PathLike[str], relay_name: str, *,
                   build_dir: str | os.PathLike[str] = "build") -> list[str]:
    """Raw messages kept by the stand-in of relay ``relay_name`` (its sink Maildir), oldest
    first."""
    return fixture.maildir_messages(_relay(site_file, relay_name, build_dir), fixture.SINK_DIR)


def clear_relay_messages(site_file: str | os.PathLike[str], relay_name: str, *,
                         build_dir: str | os.PathLike[str] = "build") -> None:
    """Empty the sink Maildir and the Postfix and Dovecot logs of relay ``relay_name``'s
    stand-in."""
    fixture.clear_sink(_relay(site_file, relay_name, build_dir))


def relay_log(site_file: str | os.PathLike[str], relay_name: str, *,
              build_dir: str | os.PathLike[str] = "build") -> str:
    """The Postfix log of relay ``relay_name``'s stand-in (/var/log/mail.log: ``from=``,
    ``status=``, ``sasl_username=`` lines)."""
    return fixture.read_file(_relay(site_file, relay_name, build_dir), fixture.MAIL_LOG)


_SASL_USER = re.compile(r"\bsasl_username=([^,\s]+)")


def auth_usernames(log: str) -> list[str]:
    """User names of the SMTP AUTH attempts in a Postfix log, first appearance first: the
    ``sasl_username=`` of accepted messages (``client=..., sasl_username=U``) and of failed
    attempts (``SASL PLAIN authentication failed: ..., sasl_username=U``)."""
    return list(dict.fromkeys(_SASL_USER.findall(log)))


def relay_auth_attempts(site_file: str | os.PathLike[str], relay_name: str, *,
                        build_dir: str | os.PathLike[str] = "build") -> list[str]:
    """User names anyone tried SMTP AUTH with at relay ``relay_name``'s stand-in since its log
    was last cleared. A relay container lets nobody log in: any name here is a site offering it
    credentials (meant for another relay). For a relay the provider answers for, these are the
    provider's logins, failed or not."""
    return auth_usernames(relay_log(site_file, relay_name, build_dir=build_dir))


def break_relay_certificate(site_file: str | os.PathLike[str], relay_name: str, *,
                            build_dir: str | os.PathLike[str] = "build") -> None:
    """Make relay ``relay_name``'s stand-in present a certificate of a CA nobody knows (same
    names), reload its Postfix and wait until every listener presents it: a site that verifies
    the relay must not use it now. For the provider only its Postfix changes (IMAP/POP3 keep
    theirs). Undo with :func:`restore_relay_certificate` (or ``lab up``)."""
    c = _relay(site_file, relay_name, build_dir)
    unknown = tls.new_ca(f"mailstack lab: a CA nobody trusts ({uuid.uuid4().hex[:8]})")
    bogus = tls.issue(unknown, _cert_names(c))
    fixture.serve_certificate(c, bogus.cert, bogus.key)


def restore_relay_certificate(site_file: str | os.PathLike[str], relay_name: str, *,
                              build_dir: str | os.PathLike[str] = "build") -> None:
    """Put the lab CA's certificate back on relay ``relay_name``'s stand-in (after
    :func:`break_relay_certificate`)."""
    lab = state(site_file, build_dir=build_dir)
    c = _relay_in(lab, relay_name)
    ident = fixture_id(c)
    crt, key = lab.lab_dir / f"{ident}.crt", lab.lab_dir / f"{ident}.key"
    try:
        pair = tls.KeyPair(crt.read_text(encoding="utf-8"), key.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolError(f"{crt} or its key is missing: run `mailstack lab up` again") from None
    fixture.serve_certificate(c, pair.cert, pair.key)


# -- the provider --------------------------------------------------------------------------

def provider_messages(site_file: str | os.PathLike[str], *,
                      build_dir: str | os.PathLike[str] = "build") -> list[str]:
    """Raw messages the provider accepted from logged-in users (its sink Maildir), oldest
    first."""
    return provider_fixture.messages(_provider(site_file, build_dir))


def clear_provider_messages(site_file: str | os.PathLike[str], *,
                            build_dir: str | os.PathLike[str] = "build") -> None:
    """Empty the provider's sink Maildir and its Postfix and Dovecot logs."""
    fixture.clear_sink(_provider(site_file, build_dir))


def provider_mailbox(site_file: str | os.PathLike[str], user: str, *,
                     build_dir: str | os.PathLike[str] = "build") -> list[str]:
    """Raw messages in the provider mailbox of login ``user``, oldest first."""
    return provider_fixture.mailbox(_provider(site_file, build_dir), user)


def put_provider_message(site_file: str | os.PathLike[str], user: str, raw: str,
                         seen: bool = False, *,
                         build_dir: str | os.PathLike[str] = "build") -> str:
    """Drop message ``raw`` into the provider mailbox of ``user`` (Maildir ``new/``; with
    ``seen``: ``cur/NAME:2,S``, as if read at the provider); return its path there."""
    return provider_fixture.put_message(_provider(site_file, build_dir), user, raw, seen=seen)


def clear_provider_mailbox(site_file: str | os.PathLike[str], user: str, *,
                           build_dir: str | os.PathLike[str] = "build") -> None:
    """Delete every message in the provider mailbox of ``user``."""
    provider_fixture.clear_mailbox(_provider(site_file, build_dir), user)


def provider_log(site_file: str | os.PathLike[str], daemon: str = "postfix", *,
                 build_dir: str | os.PathLike[str] = "build") -> str:
    """The provider's Postfix log (``sasl_username=``, ``Sender address rejected``) or, with
    ``daemon="dovecot"``, its Dovecot log (``pop3-login: Login: user=<...>``, ``Password
    mismatch``)."""
    return provider_fixture.read_log(_provider(site_file, build_dir), daemon)


def provider_auth_attempts(site_file: str | os.PathLike[str], *,
                           build_dir: str | os.PathLike[str] = "build") -> list[str]:
    """User names anyone tried SMTP AUTH with at the provider (failed or not), first
    appearance first, since its log was last cleared."""
    return auth_usernames(provider_log(site_file, build_dir=build_dir))


def set_provider_password(site_file: str | os.PathLike[str], user: str, password: str, *,
                          build_dir: str | os.PathLike[str] = "build") -> None:
    """Give the provider mailbox ``user`` another password (for SMTP AUTH, IMAP and POP3) so
    the site's credentials are wrong; the next ``lab up`` puts the site's back."""
    provider_fixture.set_password(_provider(site_file, build_dir), user, password)
