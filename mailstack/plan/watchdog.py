"""A watchdog for a branch's own replica: slapd that hangs is restarted.

A branch's lookups ask its replica first, then the provider (plan/hosts.ldap_uri). A replica
that is down costs nothing: libldap moves on to the provider at once. A replica that *hangs*
(SIGSTOP, a stuck disk) still accepts connections in the kernel, so libldap never moves on:
Postfix's table answers a temporary failure after its ``timeout``, Dovecot waits up to 64 s
on an open connection (2.3, hard-coded) and then fails temporarily. Nothing bounces, but
nothing is delivered either, until slapd answers again. So a timer asks the replica over
ldapi every few seconds; two unanswered tries in a row kill it (SIGKILL: Debian's slapd unit
stops through its init script, which sends SIGTERM and gives up on a stopped slapd, and its
start then finds the old one running; tried) and start it again. A slapd that is stopped on
purpose is left alone.
"""

from __future__ import annotations

from mailstack.plan import FileSpec, layout

UNIT = "mailstack-ldap-watchdog"
SCRIPT = "/usr/local/lib/mailstack/ldap-watchdog"
INTERVAL = "15s"
ASK_SECONDS = 5
SERVICE = f"{UNIT}.timer"


def wanted(roles: tuple[str, ...]) -> bool:
    """On a host with a replica that its own daemons ask first."""
    return "ldap-replica" in roles and bool({"mta", "imap"} & set(roles))


def script() -> str:
    return f"""#!/bin/sh
# mailstack: restart slapd when it does not answer on its own socket (mailstack.plan.watchdog)
# Rendered by mailstack; do not edit on the host.
systemctl is-active --quiet slapd || exit 0   # stopped or starting: not a hang
for try in 1 2; do
    if timeout {ASK_SECONDS} ldapsearch -Q -Y EXTERNAL -H {layout.LDAPI_URI} -o nettimeout=3 \\
            -s base -b "" -LLL 1.1 >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done
echo "slapd did not answer on {layout.LDAPI_URI} twice within {ASK_SECONDS} s: restarting it"
# Debian's slapd unit runs its init script, whose stop sends SIGTERM and gives up on a stopped
# or stuck slapd (its start then finds it running): SIGKILL first (mdb survives a crash)
systemctl kill --signal=SIGKILL slapd
sleep 1
exec systemctl restart slapd
"""


def files(roles: tuple[str, ...]) -> list[FileSpec]:
    if not wanted(roles):
        return []
    header = "the replica's watchdog (mailstack.plan.watchdog says why)"
    return [
        FileSpec(SCRIPT, "_formats/verbatim.j2", {"text": script()}, 0o755),
        FileSpec(f"/etc/systemd/system/{UNIT}.service", "_formats/ini.j2", {
            "header": header,
            "sections": [("Unit", [("Description", "mailstack: restart a hung slapd"),
                                   ("After", "slapd.service")]),
                         ("Service", [("Type", "oneshot"), ("ExecStart", SCRIPT)])]}),
        FileSpec(f"/etc/systemd/system/{UNIT}.timer", "_formats/ini.j2", {
            "header": header,
            "sections": [("Unit", [("Description", "mailstack: ask slapd every "
                                                   f"{INTERVAL} whether it answers")]),
                         ("Timer", [("OnBootSec", "60s"), ("OnUnitActiveSec", INTERVAL),
                                    ("AccuracySec", "1s")]),
                         ("Install", [("WantedBy", "timers.target")])]}),
    ]


DOVECOT_ENVIRONMENT = "TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS NOTIFY_SOCKET"
"""Dovecot 2.3.19's default import_environment (doveconf -d)."""
LDAP_TIMEOUTS = ("LDAPTIMEOUT=3", "LDAPNETWORK_TIMEOUT=3")
"""libldap's own options, read from the environment: a search and a connection that get no
answer fail after 3 s (not libldap's default: never), so a login or a delivery that asks a
hung replica on a new connection fails temporarily within seconds."""


def dovecot_settings(roles: tuple[str, ...]) -> list[tuple[str, str]]:
    """On a host whose Dovecot asks its replica first: libldap's timeouts for its auth
    processes (Postfix's tables have their own ``timeout``: plan/postfix.ldap_table)."""
    if "ldap-replica" not in roles:
        return []
    return [("import_environment", " ".join((DOVECOT_ENVIRONMENT, *LDAP_TIMEOUTS)))]


def services(roles: tuple[str, ...]) -> tuple[str, ...]:
    return (SERVICE,) if wanted(roles) else ()


def pickup(path: str) -> str:
    return "systemd" if path.startswith("/etc/systemd/system/") else "none"
