"""Site -> plan: every decision about what each host receives, as pure data.

``plan_site(site, secrets)`` returns a :class:`SitePlan`; it reads secrets through the mapping
it is given and touches nothing else. Templates only format what is decided here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PLACERS = ("base", "slapd", "postfix", "dovecot")
"""Which role places a file (the manifest's ``role``): the daemon roles stage and check theirs as
a whole; base places every other file."""

PICKUPS = ("none", "reload", "restart", "ldap", "systemd", "tls", "aliases", "fail2ban",
           "journald", "nginx")
"""How a file's daemon picks it up (the manifest's ``pickup``): ``reload`` or ``restart`` the
role's daemon; ``ldap``, loaded into the running slapd by the LDAP modules; ``systemd``, a unit:
systemd reloads its units and the host's other services restart; ``tls``, the host's TLS
material: every daemon role reloads its daemon; ``aliases``, /etc/aliases: newaliases rebuilds
its database; ``fail2ban``, fail2ban's jails: its whole configuration is checked
(``fail2ban-client -t``), then fail2ban reloads; ``journald``, journald's drop-in:
journald restarts and flushes its runtime journal to disk; ``nginx``, nginx's site: ``nginx -t``
checks the whole configuration, then nginx reloads; ``none``, read afresh on each use
(getmail's files)."""


@dataclass(frozen=True)
class FileSpec:
    """One file a host receives: where, from which template and data, with which owner and mode;
    which role places it and how its daemon picks it up."""

    path: str
    template: str
    data: Mapping[str, Any]
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    role: str = "base"
    pickup: str = "none"

    @property
    def secret(self) -> bool:
        """Secret files are unreadable by others; their rendered copy is 0600 locally too."""
        return not self.mode & 0o004


@dataclass(frozen=True)
class HostPlan:
    name: str
    hostname: str
    roles: tuple[str, ...]
    files: tuple[FileSpec, ...]
    packages: tuple[str, ...]
    services: tuple[str, ...]
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SitePlan:
    site: str
    hosts: Mapping[str, HostPlan]


def host_with(site: Any, role: str) -> str:
    """The site's first host (by name) that has ``role``."""
    return next(name for name, h in sorted(site.hosts.items()) if role in h.roles)


def plan_site(site: Any, secrets: Mapping[str, str]) -> SitePlan:
    """Plan every host of the site. ``secrets`` maps secret names to their values."""
    from mailstack.plan import hosts

    return hosts.plan_site(site, secrets)
