"""What a running lab looks like on disk: ``build/<site>/lab/`` with lab.json, the Ansible
inventory and the SSH key.

``lab.json`` is what ``verify`` reads to find the client and the relays::

    {"version": 1, "site": ..., "network": ..., "subnet": ..., "gateway": ...,
     "containers": [{"name", "role": host|relay|provider|client, "key", "hostname", "ip",
                     "aliases", "pinned", "port", "tls", "tls_names", "stands_for",
                     "listens", "mailboxes"}, ...],
     "inventory": ABS PATH, "key": ABS PATH,
     "relay_certs": {relay name: ABS PATH of the certificate its stand-in presents},
     "relay_cas": {relay name: ABS PATH of the lab CA that signed it},
     "provider_ca": ABS PATH or null}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import yaml

from mailstack.errors import ToolError
from mailstack.lab.plan import LabContainer, LabPlan

__all__ = [
    "INVENTORY",
    "KEY",
    "LAB_JSON",
    "LabState",
    "lab_dir",
    "load_state",
    "read_state",
    "render_inventory",
    "write_atomic",
]

LAB_JSON = "lab.json"
INVENTORY = "inventory.yml"
KEY = "id_ed25519"
SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
FORMAT_VERSION = 1


def lab_dir(build_dir: str | os.PathLike[str], site: str) -> Path:
    """``BUILD_DIR/<site>/lab``, absolute."""
    return (Path(build_dir) / site / "lab").absolute()


@dataclass(frozen=True)
class LabState:
    """A lab that is up: its plan plus where its inventory and key are."""

    plan: LabPlan
    lab_dir: Path
    inventory: Path
    key: Path
    relay_certs: dict[str, Path] = field(default_factory=dict)
    """Relay name -> the certificate its stand-in (relay container or provider) presents."""
    relay_cas: dict[str, Path] = field(default_factory=dict)
    """Relay name -> the lab CA certificate that signed it (what its ca_secret should hold)."""
    provider_ca: Path | None = None
    """The provider's CA certificate (what a fetch's ca_secret should hold), if any."""
    debs: Path | None = None
    """The local apt repository bare site hosts have at /debs (``lab up --start bare``)."""
    secrets_created: tuple[str, ...] = field(default=(), compare=False)
    """Outside secrets this ``up`` wrote into the site's secrets folder (not kept in lab.json)."""
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """Secrets that exist but do not fit the lab (not kept in lab.json)."""

    # -- shortcuts into the plan ---------------------------------------------------------
    @property
    def site(self) -> str:
        return self.plan.site

    @property
    def network(self) -> str:
        return self.plan.network

    @property
    def subnet(self) -> str:
        return self.plan.subnet

    @property
    def gateway(self) -> str:
        return self.plan.gateway

    @property
    def containers(self) -> tuple[LabContainer, ...]:
        return self.plan.containers

    @property
    def hosts(self) -> tuple[LabContainer, ...]:
        return self.plan.hosts

    @property
    def relays(self) -> tuple[LabContainer, ...]:
        return self.plan.relays

    @property
    def client(self) -> LabContainer:
        return self.plan.client

    def host(self, key: str) -> LabContainer:
        return self.plan.host(key)

    def relay(self, name: str) -> LabContainer:
        return self.plan.relay(name)

    @property
    def provider(self) -> LabContainer | None:
        return self.plan.provider

    @property
    def stand_ins(self) -> tuple[LabContainer, ...]:
        return self.plan.stand_ins

    @property
    def names(self) -> dict[str, str]:
        """Container name -> role."""
        return {c.name: c.role for c in self.containers}

    @property
    def ips(self) -> dict[str, str]:
        """Container name -> lab address."""
        return {c.name: c.ip for c in self.containers}

    @property
    def lab_json(self) -> Path:
        return self.lab_dir / LAB_JSON

    def to_json(self) -> dict[str, object]:
        return {
            "version": FORMAT_VERSION,
            **self.plan.to_json(),
            "inventory": str(self.inventory),
            "key": str(self.key),
            "relay_certs": {k: str(v) for k, v in self.relay_certs.items()},
            "relay_cas": {k: str(v) for k, v in self.relay_cas.items()},
            "provider_ca": str(self.provider_ca) if self.provider_ca else None,
            "debs": str(self.debs) if self.debs else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, object], where: Path) -> LabState:
        if data.get("version") != FORMAT_VERSION:
            raise ToolError(f"{where / LAB_JSON}: unknown format version {data.get('version')!r}"
                            "; run `mailstack lab down` and `lab up` again")
        certs = cast(dict[str, object], data.get("relay_certs") or {})
        cas = cast(dict[str, object], data.get("relay_cas") or {})
        provider_ca = data.get("provider_ca")
        return cls(
            plan=LabPlan.from_json(data),
            lab_dir=where,
            inventory=Path(str(data["inventory"])),
            key=Path(str(data["key"])),
            relay_certs={str(k): Path(str(v)) for k, v in certs.items()},
            relay_cas={str(k): Path(str(v)) for k, v in cas.items()},
            provider_ca=Path(str(provider_ca)) if provider_ca else None,
            debs=Path(str(data["debs"])) if data.get("debs") else None,
        )

    def write(self) -> None:
        write_atomic(self.lab_json, json.dumps(self.to_json(), indent=2) + "\n")


def load_state(site_file: str | os.PathLike[str], *, build_dir: str | os.PathLike[str] = "build"
               ) -> LabState:
    """The state recorded by the last ``lab up`` of the site in ``site_file`` (ToolError if
    there is none). Load it once and keep it: each call reads the site file and lab.json."""
    from mailstack.site.load import load_site

    site = load_site(site_file)
    where = lab_dir(build_dir, site.site)
    lab = read_state(where)
    if lab is None:
        raise ToolError(f"no lab is up for site {site.site} ({where / 'lab.json'} is missing): "
                        f"run `mailstack lab up {site_file}`")
    return lab


def read_state(where: Path) -> LabState | None:
    """The state recorded in ``where/lab.json``, or None when there is none."""
    path = where / LAB_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ToolError(f"{path}: cannot read the lab state: {err}") from None
    return LabState.from_json(data, where)


def render_inventory(plan: LabPlan, key: Path) -> str:
    """The Ansible inventory of the site hosts (group ``all``, hosts by their site key)."""
    hosts = {
        c.key: {
            "ansible_host": c.ip,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": SSH_COMMON_ARGS,
            "ansible_python_interpreter": "/usr/bin/python3",
            "mailstack_lab_container": c.name,
        }
        for c in plan.hosts
    }
    header = (f"# Written by `mailstack lab up` for site {plan.site}: the lab's containers on "
              f"podman network {plan.network} ({plan.subnet}).\n")
    return header + yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False)


def write_atomic(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    data = text.encode("utf-8") if isinstance(text, str) else text
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
