"""Where the files mailstack ships with itself are: package data, found through
:mod:`importlib.resources`, so the tool works the same from a checkout, a wheel or pipx, from
any current directory.

- ``TEMPLATES``: the Jinja templates of every rendered file (paths mirror the destinations);
- ``ANSIBLE``: ``ansible.cfg`` and the Ansible collection ``mailstack.mail``
  (``ansible_collections/mailstack/mail``: playbooks/site.yml, roles, modules, the callback);
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
COLLECTION = ANSIBLE / "ansible_collections" / "mailstack" / "mail"
PLAYBOOK = COLLECTION / "playbooks" / "site.yml"
ROLES = COLLECTION / "roles"
MODULES = COLLECTION / "plugins" / "modules"
LAB_SCRIPTS = PACKAGE / "lab" / "scripts"


def lab_script(name: str) -> str:
    """The text of a helper script the lab runs in a container (``python3 -c TEXT ARGS``)."""
    return (LAB_SCRIPTS / name).read_text(encoding="utf-8")
