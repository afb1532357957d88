"""Bans (fail2ban): networks that are never banned must be networks, thresholds must be sane."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from mailstack.findings import Finding
from mailstack.site.marks import Path
from mailstack.site.model import Site

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(duration: str) -> int:
    """A duration as the model spells it (10m, 1h: the loader checked the pattern)."""
    return int(duration[:-1]) * UNITS[duration[-1]]


def check(site: Site) -> Iterator[Finding]:
    def find(path: Path, message: str, severity: str = "error") -> Finding:
        return Finding(site.marks.at(path), path, message, severity)  # type: ignore[arg-type]

    bans = site.bans
    if bans.max_failures < 1:
        yield find(("bans", "max_failures"), f"{bans.max_failures} failures cannot ban anyone: "
                                             "use 1 or more")
    elif bans.max_failures < 3:
        yield find(("bans", "max_failures"),
                   f"{bans.max_failures} failed login(s) ban an address: one mistyped password "
                   "locks out everyone behind it (an office's NAT); 5 or more is usual",
                   "warning")
    if seconds(bans.ban_time) < seconds(bans.window):
        yield find(("bans", "ban_time"), f"a ban of {bans.ban_time} is shorter than the window "
                                         f"{bans.window} the failures are counted in: a guesser "
                                         "loses less time than it took to be banned", "warning")
    for i, entry in enumerate(bans.never):
        path: Path = ("bans", "never", i)
        try:
            net = ipaddress.ip_network(entry, strict=True)
        except ValueError:
            try:
                wide = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                yield find(path, f"'{entry}' is neither an IP address nor a network in CIDR "
                                 "notation (203.0.113.7, 198.51.100.0/24)")
                continue
            yield find(path, f"'{entry}' has host bits set: write the network {wide}")
            continue
        if net.prefixlen == 0:
            yield find(path, f"'{entry}' is every address: nothing would ever be banned",
                       "warning")
