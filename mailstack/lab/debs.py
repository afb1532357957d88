"""The local apt repository of the lab's bare hosts.

A bare host (``lab up --start bare``) is what a real server from a hosting provider is: Debian
minbase, systemd, sshd, python3, sudo, and nothing of the mail stack. Its only apt source is
``deb [trusted=yes] file:/debs ./``; the lab bind-mounts a repository there, read-only, that
``lab/scripts/build-debs.sh`` makes on this machine from Debian's packages: the closure of what the
site's hosts need (the packages of their plans, exactly what the rendered manifest lists) on top
of the bare image. No network inside the lab, and whatever later work adds to a host's packages
(fail2ban, certbot, Sieve) is served the same way.

Repositories live in :data:`DEBS_ROOT`, one folder per package list and bare image, so a second
``lab up`` with the same list reuses the first one's folder within milliseconds.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path

from mailstack import resources
from mailstack.container import BARE_IMAGE, image_id
from mailstack.errors import ToolError

DEBS_ROOT = Path("/var/lib/mailstack-lab/debs")
MOUNT = "/debs"
"""Where a bare host finds the repository (its sources.list names ``file:/debs``)."""
SCRIPT = resources.LAB_SCRIPTS / "build-debs.sh"
TIMEOUT = 900.0


def key(packages: Iterable[str], image: str) -> str:
    """12 hex digits naming the repository of ``packages`` on top of bare image ``image``."""
    text = "\n".join([image, *sorted(set(packages))])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def repository(packages: Iterable[str], *, root: Path = DEBS_ROOT) -> Path:
    """The folder of the repository that serves ``packages`` to a bare host: built when it is
    missing (a minute or less), reused otherwise. ToolError when the build fails."""
    wanted = sorted(set(packages))
    image = image_id(BARE_IMAGE)
    if image is None:
        raise ToolError(f"the bare lab hosts need the image {BARE_IMAGE}: run "
                        "`mailstack lab setup` (or `make image`)")
    folder = root / key(wanted, image)
    if (folder / "Packages").is_file():
        return folder
    try:
        proc = subprocess.run(["bash", str(SCRIPT), str(folder), *wanted], capture_output=True,
                              text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(f"building the bare hosts' apt repository {folder} took over "
                        f"{TIMEOUT:g} s") from None
    if proc.returncode != 0 or not (folder / "Packages").is_file():
        tail = "\n".join("  " + line for line in proc.stderr.strip().splitlines()[-8:])
        raise ToolError(f"building the bare hosts' apt repository {folder} failed:\n{tail}")
    return folder
