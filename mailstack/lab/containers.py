"""The lab's containers: podman calls, how each container starts (image, volumes, labels),
whether a running one still matches the plan."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mailstack import container as podman
from mailstack.container import BARE_IMAGE, IMAGE, Container, image_exists
from mailstack.errors import ToolError
from mailstack.lab import debs
from mailstack.lab.plan import LabContainer, LabPlan

T = TypeVar("T")
R = TypeVar("R")


def podman_run(args: Sequence[str], *, what: str, check: bool = True,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return podman._podman(args, what=what, check=check, timeout=timeout)


def parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
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


def require_podman(*, bare: bool = False) -> None:
    if not podman.podman_available():
        raise ToolError("the lab needs podman: it is missing or does not answer "
                        "(run `mailstack lab setup` as root)")
    if not image_exists(IMAGE):
        raise ToolError(f"the lab needs the image {IMAGE}: run `mailstack lab setup` "
                        "(or `make image`)")
    if bare and not image_exists(BARE_IMAGE):
        raise ToolError(f"bare lab hosts need the image {BARE_IMAGE}: run "
                        "`mailstack lab setup` (or `make image`)")


def inspect_container(name: str) -> dict[str, Any] | None:
    proc = podman_run(["container", "inspect", name], what=f"inspecting container {name}",
                   check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout)
    return data[0] if data else None


START_LABEL = "mailstack.start"
"""The podman label that records how a site host container started (plan.start)."""

HOST_CAPS = ("NET_ADMIN",)
"""What a site host needs beyond RUN_FLAGS: fail2ban bans in nftables (without NET_ADMIN
``nft`` answers "Operation not permitted" and no ban takes effect). The lab's network is
``--internal``, so a host that changes its own routes still reaches nothing outside."""


def caps(c: LabContainer) -> tuple[str, ...]:
    return HOST_CAPS if c.role == "host" else ()


def boot(plan: LabPlan, c: LabContainer, debs_dir: Path | None
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


def matches(info: dict[str, Any], plan: LabPlan, c: LabContainer) -> bool:
    if not (info.get("State") or {}).get("Running"):
        return False
    labels = (info.get("Config") or {}).get("Labels") or {}
    if c.role == "host" and labels.get(START_LABEL, "prepared") != plan.start:
        return False
    added = {cap.removeprefix("CAP_") for cap in
             (info.get("HostConfig") or {}).get("CapAdd") or []}
    if not set(caps(c)) <= added:
        return False
    if (info.get("Config") or {}).get("Hostname") != c.hostname:
        return False
    net = ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(plan.network)
    if not net or net.get("IPAddress") != c.ip:
        return False
    return set(c.aliases) <= set(net.get("Aliases") or [])


def ensure_container(plan: LabPlan, c: LabContainer, debs_dir: Path | None) -> bool:
    """Start ``c`` unless a matching one runs; True when it was (re)started."""
    info = inspect_container(c.name)
    if info is not None and matches(info, plan, c):
        return False
    if info is not None:
        Container(c.name).remove()
    start(plan, c, debs_dir)
    return True


def start(plan: LabPlan, c: LabContainer, debs_dir: Path | None, image: str | None = None
           ) -> None:
    """Start ``c`` as :func:`boot` says, or from ``image`` (a snapshot) with the same volumes."""
    boot_image, volumes, labels = boot(plan, c, debs_dir)
    Container.start(c.name, hostname=c.hostname, network=plan.network, ip=c.ip,
                    aliases=c.aliases, image=image or boot_image, volumes=volumes,
                    labels=labels, caps=caps(c))
