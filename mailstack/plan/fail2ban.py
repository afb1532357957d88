"""fail2ban: ban the addresses that keep failing to log in, as data.

Each host runs Debian's fail2ban with one jail per service a password can be guessed on: sshd
(Debian enables it; here made to work), postfix-sasl on a host with the mta role, dovecot on a
host with the imap role, and slapd where slapd listens on the network (``slapd.
serves_network``; an ldapi-only slapd has no remote binds to guess). A ban refuses the
jail's ports to that address in nftables for ``bans.ban_time``; nothing locks an account (a
count of failures per account would lock real users out, at an attacker's will).

What Debian 12 taught us (tried in the lab image, fail2ban 1.0.2):
- no rsyslog, no /var/log/mail.log: every jail reads the journal (``backend = systemd``,
  python3-systemd, a Recommends that the roles, installing without recommends, name);
- Postfix's daemons run in ``postfix@-.service``; the stock filter matches only
  ``_SYSTEMD_UNIT=postfix.service``. A jail's ``journalmatch`` is added to its filter's (both
  match); slapd's filter has none at all;
- the stock banaction is iptables; Debian 12 has nftables (named, again a Recommends);
- Debian's jail.d/defaults-debian.conf enables sshd with a log file that does not exist, so
  fail2ban fails to start after the install until this configuration is in place;
- every start warns "'allowipv6' not defined in 'Definition'" unless fail2ban.local says it.

Site policy: ``bans`` (max_failures, window, ban_time, never). Never banned: loopback, the
host's own addresses (fail2ban's ignoreself), the site's relays named by IP address (the head
office hands mail over from there) and the networks the site names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailstack.plan import FileSpec, layout, postfix, slapd
from mailstack.site.model import Site

JAIL_LOCAL = "/etc/fail2ban/jail.local"
FAIL2BAN_LOCAL = "/etc/fail2ban/fail2ban.local"
PACKAGES = ("fail2ban", "python3-systemd", "nftables")
"""fail2ban and the two Recommends it needs here: the journal reader and the firewall."""
SERVICE = "fail2ban"
LOOPBACK = ("127.0.0.0/8", "::1/128")
SSH_PORT = 22


@dataclass(frozen=True)
class Jail:
    """One jail: the stock filter of that name, the ports a ban closes, the unit whose journal
    holds the daemon's log lines (None: the filter's own journalmatch is right), extra
    settings."""

    name: str
    ports: tuple[int, ...]
    unit: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def settings(self) -> list[tuple[str, str]]:
        out = [("enabled", "true"), ("port", ",".join(str(p) for p in self.ports))]
        if self.unit:
            out.append(("journalmatch", f"_SYSTEMD_UNIT={self.unit}"))
        return out + list(self.extra)


def jails(site: Site, host: str) -> list[Jail]:
    """The jails of ``host``, by its roles."""
    roles = site.hosts[host].roles
    out = [Jail("sshd", (SSH_PORT,))]
    if "mta" in roles:
        # SASL failures on 465/587; the ban closes port 25 too (the same client, guessing)
        out.append(Jail("postfix-sasl", (layout.SMTP_PORT, layout.SUBMISSIONS_PORT,
                                         layout.SUBMISSION_PORT), "postfix@-.service"))
    if "imap" in roles:
        out.append(Jail("dovecot", (layout.IMAP_PORT, layout.IMAPS_PORT, layout.POP3_PORT,
                                    layout.POP3S_PORT)))
    if ("ldap" in roles and slapd.serves_network(site)) or "ldap-replica" in roles:
        # the filter pairs "ACCEPT from IP=" with "RESULT ... err=49" (olcLogLevel stats)
        out.append(Jail("slapd", (layout.LDAP_PORT, layout.LDAPS_PORT), "slapd.service"))
    return out


def jail_names(site: Site, host: str) -> list[str]:
    return sorted(j.name for j in jails(site, host))


def never_banned(site: Site) -> list[str]:
    """fail2ban's ignoreip: loopback, the site's own relays named by IP address, then the
    site's own list (as networks; check refuses what is not one)."""
    # the relays Postfix trusts by IP (postfix.trusted_clients); one named by host name is not
    # listed: fail2ban would resolve it at every start
    out = [*LOOPBACK, *(net for net, _ in postfix.trusted_clients(site))]
    for entry in site.bans.never:
        try:
            out.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            continue  # checks/bans.py reports it
    return list(dict.fromkeys(out))


def defaults(site: Site) -> list[tuple[str, str]]:
    """jail.local's [DEFAULT]: the site's policy, the journal, nftables."""
    return [
        ("backend", "systemd"),
        ("banaction", "nftables-multiport"),
        ("banaction_allports", "nftables-allports"),
        ("maxretry", str(site.bans.max_failures)),
        ("findtime", site.bans.window),
        ("bantime", site.bans.ban_time),
        ("ignoreself", "true"),
        ("ignoreip", " ".join(never_banned(site))),
    ]


def jail_local(site: Site, host: str) -> list[tuple[str, list[tuple[str, str]]]]:
    return [("DEFAULT", defaults(site)), *((j.name, j.settings()) for j in jails(site, host))]


def files(site: Site, host: str) -> list[FileSpec]:
    return [
        FileSpec(JAIL_LOCAL, "_formats/ini.j2", {
            "header": "fail2ban jails: addresses that keep failing to log in are refused; "
                      "additions go in /etc/fail2ban/jail.d/*.local (read after this file)",
            "sections": jail_local(site, host)}),
        FileSpec(FAIL2BAN_LOCAL, "_formats/ini.j2", {
            "header": "fail2ban itself: Debian's fail2ban.conf with one warning answered",
            "sections": [("Definition", [("allowipv6", "auto")])]}),
    ]


def pickup(path: str) -> str:
    """fail2ban checks its whole configuration (fail2ban-client -t), then reloads."""
    return "fail2ban"
