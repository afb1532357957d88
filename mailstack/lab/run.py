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

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mailstack import resources
from mailstack import secrets as site_secrets
from mailstack.container import Container, remove_image
from mailstack.errors import InputError, ToolError
from mailstack.lab import acme, debs, handmade, outside, tls
from mailstack.lab import lock as lab_lock
from mailstack.lab import provider as provider_fixture
from mailstack.lab import relay as relay_fixture
from mailstack.lab.containers import ensure_container, parallel, podman_run, require_podman
from mailstack.lab.network import ensure_network, networks, plan_for_up, remove_containers, wire
from mailstack.lab.plan import (
    STARTS,
    LabContainer,
    LabPlan,
    Start,
    acme_host,
    fixture_id,
    plan_lab,
)
from mailstack.lab.snapshots import SNAPSHOT_REPO, restore, snapshot, snapshot_image, snapshot_images
from mailstack.lab.ssh import authorize, ensure_key, require_ssh, wait_ssh
from mailstack.lab.stand_ins import StandIns, auth_usernames, cert_names
from mailstack.lab.state import (
    INVENTORY,
    LabState,
    lab_dir,
    load_state,
    read_state,
    render_inventory,
    write_atomic,
)
from mailstack.plan.hosts import packages as host_packages
from mailstack.site.load import load_site
from mailstack.site.model import Site

__all__ = [
    "CLIENT_CA_DIR",
    "SNAPSHOT_REPO",
    "auth_usernames",
    "down",
    "ensure_outside_secrets",
    "prepare_outside_secrets",
    "restore",
    "setup",
    "snapshot",
    "snapshot_image",
    "stand_ins",
    "state",
    "up",
]

CLIENT_CA_DIR = "/etc/mailstack-lab/ca"
"""Where the client container finds the stand-ins' CA certificates: ``<fixture id>.crt``
(``relay-head-office.crt``, ``provider.crt``), for probes that verify them."""


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
    site = load_site(site_file)
    if start not in STARTS:
        raise InputError(f"lab up: unknown start {start!r} (one of {', '.join(STARTS)})")
    plan_lab(site)  # refuse an unsafe site before anything runs
    require_ssh()
    require_podman(bare=start == "bare")
    where = lab_dir(build_dir, site.site)
    previous = _safe_read_state(where)
    known = [c.name for c in previous.containers] if previous else []
    # another lab up on this machine may be choosing a subnet or building the repository
    if start == "bare":
        with lab_lock.held("debs"):
            debs_dir: Path | None = debs.repository(
                p for name in sorted(site.hosts) for p in host_packages(site, name))
    else:
        debs_dir = None
    with lab_lock.held("network"):
        plan = plan_for_up(site, start)
        report = _prepare_outside(site, plan, site_file, build_dir, secrets_dir)
        # Containers of an older plan that this plan no longer has.
        stale = [n for n in known if n not in {c.name for c in plan.containers}]
        parallel(lambda n: Container(n).remove(), stale)
        ensure_network(plan, known)

    where.mkdir(parents=True, exist_ok=True)
    os.chmod(where, 0o700)
    key, public_key = ensure_key(where, site.site)
    certs = {fixture_id(c): tls.ensure_server_cert(where, fixture_id(c),
                                                   report.cas[fixture_id(c)], cert_names(c))
             for c in plan.stand_ins}

    parallel(lambda c: ensure_container(plan, c, debs_dir), plan.containers)
    wire(plan, plan.containers)
    parallel(lambda c: authorize(c, public_key), plan.hosts)
    if start == "handmade":
        parallel(handmade.configure, plan.hosts)

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

    parallel(configure, [*plan.stand_ins, plan.client])
    server = acme_host(site)
    if site.tls.mode == "acme" and site.tls.acme and server:
        ca = report.cas[outside.ACME]
        acme.configure(plan, site.tls.acme.server,
                       tls.ensure_server_cert(where, outside.ACME, ca, [server]), ca)

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
    parallel(lambda c: wait_ssh(c, key), plan.hosts)
    return lab


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
    from mailstack.checks import contexts
    from mailstack.findings import raise_errors

    site = load_site(site_file)
    raise_errors(contexts.secret_names(site))  # names are paths: refused before any is made
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
    return load_state(site_file, build_dir=build_dir)


def down(site_file: str | os.PathLike[str], *, build_dir: str | os.PathLike[str] = "build",
         keep_snapshots: bool = False) -> list[str]:
    """Remove the lab's containers, its network, ``build/<site>/lab`` and (unless
    ``keep_snapshots``) its snapshot images. Idempotent; returns the containers removed.

    ``build/<site>/lab-ca`` stays, like the secrets the lab wrote from it: the next ``up``
    uses the same CAs, so a ``ca_secret`` it wrote before still matches."""
    site = load_site(site_file)
    where = lab_dir(build_dir, site.site)
    previous = _safe_read_state(where)
    network = f"mailstack-{site.site}"
    known = [c.name for c in previous.containers] if previous else []
    host_keys = set(site.hosts) | ({c.key for c in previous.hosts} if previous else set())
    try:
        plan = plan_lab(site)
    except InputError:  # the site was edited into something the lab refuses: use the record
        plan = previous.plan if previous else LabPlan(site.site, network, "", "", ())
    removed = remove_containers(plan, known)
    nets = [n for n in networks() if n.get("name") == network]
    if nets:
        leftover = podman_run(["ps", "-a", "--filter", f"network={network}",
                            "--format", "{{.Names}}"],
                           what=f"listing containers of network {network}").stdout.split()
        if leftover:
            raise ToolError(f"network {network} still has containers that are not the lab's: "
                            f"{', '.join(leftover)}; remove them first")
        podman_run(["network", "rm", network], what=f"removing network {network}")
    if not keep_snapshots:
        for image in snapshot_images(site.site, host_keys):
            remove_image(image)
    if where.is_dir():
        shutil.rmtree(where)
    return removed


# -- the stand-ins ------------------------------------------------------------------------

def stand_ins(site_file: str | os.PathLike[str], *, build_dir: str | os.PathLike[str] = "build"
              ) -> StandIns:
    """The relays and the provider of the lab of ``site_file`` (site and lab.json read once:
    keep the object for several calls)."""
    return StandIns(state(site_file, build_dir=build_dir))
