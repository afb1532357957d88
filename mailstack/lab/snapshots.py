"""Snapshots of the lab's site hosts (``podman commit``) and restoring them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from mailstack.container import Container, commit, image_exists
from mailstack.errors import InputError, ToolError
from mailstack.lab import fixture
from mailstack.lab.containers import parallel, podman_run, start
from mailstack.lab.network import wire
from mailstack.lab.plan import LabContainer
from mailstack.lab.ssh import wait_ssh
from mailstack.lab.state import LabState, load_state

SNAPSHOT_REPO = "localhost/mailstack-snap"


_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def snapshot_image(site: str, host: str, tag: str) -> str:
    """``localhost/mailstack-snap:<site>-<host>-<tag>``."""
    return f"{SNAPSHOT_REPO}:{site}-{host}-{tag}"


def check_tag(tag: str) -> None:
    if not _TAG.match(tag) or len(tag) > 64:
        raise InputError(f"snapshot tag {tag!r}: use letters, digits, '_', '.', '-' "
                         "(not first: '.', '-'), at most 64")


def snapshot_images(site: str, host_keys: Iterable[str]) -> list[str]:
    proc = podman_run(["images", "--format", "{{.Repository}}:{{.Tag}}", SNAPSHOT_REPO],
                   what="listing snapshot images", check=False)
    prefixes = tuple(f"{SNAPSHOT_REPO}:{site}-{h}-" for h in host_keys)
    return [i for i in proc.stdout.split() if prefixes and i.startswith(prefixes)]


def snapshot(site_file: str | os.PathLike[str], tag: str, *,
             build_dir: str | os.PathLike[str] = "build") -> dict[str, str]:
    """``podman commit`` every site host container as :func:`snapshot_image`; returns
    host key -> image. Relays and the client are not snapshotted."""
    check_tag(tag)
    lab = load_state(site_file, build_dir=build_dir)
    images = {c.key: snapshot_image(lab.site, c.key, tag) for c in lab.hosts}
    for c in lab.hosts:  # flush what the daemons wrote before the file system is copied
        Container(c.name).exec(["sync"])
    parallel(lambda c: commit(c.name, images[c.key]), lab.hosts)
    return images


def restore(site_file: str | os.PathLike[str], tag: str, *,
            build_dir: str | os.PathLike[str] = "build", clear_relays: bool = True
            ) -> LabState:
    """Recreate every site host container from its snapshot ``tag`` (same name, host name,
    address, aliases), pin the relay addresses again, wait for SSH. With ``clear_relays`` the
    relays' and the provider's sink Maildirs and logs are emptied too (not the provider's
    mailboxes: :func:`clear_provider_mailbox`)."""
    check_tag(tag)
    lab = load_state(site_file, build_dir=build_dir)
    images = {c.key: snapshot_image(lab.site, c.key, tag) for c in lab.hosts}
    missing = [image for image in images.values() if not image_exists(image)]
    if missing:
        raise ToolError(f"no snapshot {tag!r} of the lab of {lab.site}: {', '.join(missing)} "
                        "missing (take one with lab.snapshot first)")

    def recreate(c: LabContainer) -> None:
        Container(c.name).remove()
        start(lab.plan, c, lab.debs, images[c.key])

    parallel(recreate, lab.hosts)
    wire(lab.plan, lab.hosts)
    if clear_relays:
        parallel(fixture.clear_sink, lab.stand_ins)
    parallel(lambda c: wait_ssh(c, lab.key), lab.hosts)
    return lab
