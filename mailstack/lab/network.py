"""The lab's podman network (``--internal``), its subnet, and the relay addresses pinned inside
it (a /32 on the stand-in, permanent neighbour entries elsewhere)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mailstack.container import Container
from mailstack.errors import ToolError
from mailstack.lab.containers import inspect_container, parallel, podman_run
from mailstack.lab.plan import LabContainer, LabPlan, Start, plan_lab
from mailstack.resources import lab_script as script
from mailstack.site.model import Site


def networks() -> list[dict[str, Any]]:
    proc = podman_run(["network", "ls", "--format", "json"], what="listing podman networks")
    return list(json.loads(proc.stdout or "[]"))


def subnets(net: dict[str, Any]) -> list[str]:
    return [s["subnet"] for s in net.get("subnets") or [] if s.get("subnet")]


def host_routes() -> list[str]:
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


def plan_for_up(site: Site, start: Start = "prepared") -> LabPlan:
    """The plan, with a subnet that is free on this host (its own network's subnet counts as
    free, so a re-run keeps it)."""
    network = f"mailstack-{site.site}"
    nets = networks()
    own = [s for n in nets if n.get("name") == network for s in subnets(n)]
    taken = [s for n in nets if n.get("name") != network for s in subnets(n)]
    taken += [r for r in host_routes() if r not in own]
    return plan_lab(site, taken=taken, start=start)


def ensure_network(plan: LabPlan, known_names: Iterable[str]) -> None:
    current = next((n for n in networks() if n.get("name") == plan.network), None)
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
        remove_containers(plan, known_names)
        podman_run(["network", "rm", plan.network], what=f"removing network {plan.network}")
    podman_run(
        ["network", "create", "--internal", "--subnet", plan.subnet, "--gateway", plan.gateway,
         plan.network],
        what=f"creating the lab network {plan.network} ({plan.subnet})",
    )


def attached(network: str, prefix: str) -> list[str]:
    """Names of containers on ``network`` whose names start with ``prefix``."""
    proc = podman_run(["ps", "-a", "--filter", f"network={network}", "--format", "{{.Names}}"],
                   what=f"listing containers of network {network}", check=False)
    if proc.returncode != 0:
        return []
    return [n for n in proc.stdout.split() if n.startswith(prefix)]


def remove_containers(plan: LabPlan, known_names: Iterable[str] = ()) -> list[str]:
    prefix = f"{plan.network}-"
    names = list(dict.fromkeys([*(c.name for c in plan.containers), *known_names,
                                *attached(plan.network, prefix)]))
    existing = set(podman_run(["ps", "-a", "--format", "{{.Names}}"],
                           what="listing containers").stdout.split())
    names = [n for n in names if n.startswith(prefix) and n in existing]
    parallel(lambda n: Container(n).remove(), names)
    return names


def mac(plan: LabPlan, c: LabContainer) -> str:
    info = inspect_container(c.name) or {}
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


def wire(plan: LabPlan, targets: Iterable[LabContainer]) -> None:
    """Pin the relays' own addresses inside the lab and announce each target's MAC address.

    A relay container (or the provider) carries its pinned addresses as /32s; the site hosts
    and the client route them on-link to its MAC (a permanent neighbour entry), so they are
    answered by the stand-in and never leave the lab. Needs CAP_NET_ADMIN, granted to this one command by
    ``podman exec --privileged`` (Container.exec has no such option).
    """
    routes = [[address, mac(plan, r)] for r in plan.stand_ins for address in r.pinned]

    def wire(c: LabContainer) -> None:
        want = {
            "ip": c.ip,
            "pin": list(c.pinned),
            "routes": routes if c.role not in ("relay", "provider") else [],
        }
        podman_run(["exec", "--privileged", c.name, "python3", "-c", _WIRE, json.dumps(want)],
                what=f"wiring relay addresses in container {c.name}")

    parallel(wire, targets)
