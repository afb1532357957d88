"""Where the files mailstack ships with itself are: package data, found through
:mod:`importlib.resources`, so the tool works the same from a checkout, a wheel or pipx, from
any current directory.

- ``TEMPLATES``: the Jinja templates of every rendered file (paths mirror the destinations);
- ``ANSIBLE``: ``ansible.cfg``, ``playbooks/`` (site.yml, the stdout callback) and ``roles/``;
- ``LAB_SCRIPTS``: the lab's shell scripts (host packages and podman, the images, the bare
  hosts' apt repository).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGE = Path(str(files("mailstack")))
TEMPLATES = PACKAGE / "templates"
ANSIBLE = PACKAGE / "ansible"
ANSIBLE_CFG = ANSIBLE / "ansible.cfg"
PLAYBOOK = ANSIBLE / "playbooks" / "site.yml"
CALLBACK_DIR = ANSIBLE / "playbooks" / "callback_plugins"
ROLES = ANSIBLE / "roles"
LAB_SCRIPTS = PACKAGE / "lab" / "scripts"
