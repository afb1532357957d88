"""Locks for what two `lab up` runs on one machine must not do at the same time: choose a free
subnet and create the network (``network``: both would see the same subnet free), and build the
bare hosts' apt repository (``debs``: both would write the same folder; its first build takes
about a minute, so it has its own lock). The containers start and are configured outside them."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def path(name: str) -> Path:
    """Per user, like podman's own state: root's and a rootless user's labs do not meet."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and Path(runtime).is_dir() else Path(tempfile.gettempdir())
    return base / f"mailstack-lab-{name}-{os.getuid()}.lock"


@contextmanager
def held(name: str) -> Iterator[None]:
    """Wait for the lock ``name``, hold it for the block (released when the process dies,
    too)."""
    fd = os.open(path(name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
