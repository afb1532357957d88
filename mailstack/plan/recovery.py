"""After an outage of a daemon that Postfix delivers through, Postfix retries its queue at once.

Seen on Debian 12 (Postfix 3.7, slapd 2.5, Dovecot 2.3) in the lab (tests/live/test_faults.py):
- slapd stopped: a queue run defers local mail with "address resolver failure", and after slapd
  is back qmgr keeps answering that failure from its resolver cache for the same address, even
  on `postqueue -f`, until it happens to resolve another address; smtpd processes likewise keep
  refusing (451 4.3.0) a sender whose resolution failed until they exit. `postfix reload`
  replaces those processes. Dovecot's LDAP connection needs a few seconds more to come back.
- Dovecot stopped: the deferred mail waits for the next queue run and its own backoff
  (queue_run_delay 300 s, then up to maximal_backoff_time, 4000 s).
So on a host where Postfix runs beside slapd or Dovecot, a drop-in for their units makes Postfix
retry when they (re)start: after slapd, a reload (fresh resolver caches) and a flush a few
seconds later (a transient systemd timer, so slapd's start does not wait for it; it never
fails, so no failed unit is left behind); after
Dovecot (ready when its unit is: Type=notify), a flush. Nothing happens while Postfix is down.
"""

from __future__ import annotations

from mailstack.plan import FileSpec

DROP_IN = "mailstack-postfix-retry.conf"
FLUSH_DELAY = "10s"
"""After slapd's start: time for Dovecot's LDAP connection to come back before the flush."""

_IF_POSTFIX = "postfix status >/dev/null 2>&1 || exit 0"
COMMANDS = {
    "slapd": (f"-/bin/sh -c '{_IF_POSTFIX}; postfix reload >/dev/null 2>&1; "
              f"exec systemd-run --quiet --on-active={FLUSH_DELAY} "
              "--timer-property=AccuracySec=1s /bin/sh -c \"postqueue -f || true\"'"),
    "dovecot": f"-/bin/sh -c '{_IF_POSTFIX}; exec /usr/sbin/postqueue -f'",
}
ROLE_UNITS = {"ldap": "slapd", "ldap-replica": "slapd", "imap": "dovecot"}
"""The units Postfix retries after, by role (a host holds the provider or a replica)."""


def drop_in_path(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.service.d/{DROP_IN}"


BACK_TO_REPLICA = ("-/bin/sh -c 'systemctl is-active --quiet dovecot || exit 0; "
                   "exec doveadm reload'")
"""After a branch's replica (re)starts: Dovecot's auth processes, which moved on to the
provider while the replica was away and would stay there (a provider that then hangs or
goes away stops the branch's logins: seen in the lab, "454 4.7.0 Temporary authentication
failure"), start again and ask the replica first. Postfix's reload above does the same for
its tables."""


def files(roles: tuple[str, ...]) -> list[FileSpec]:
    """The drop-ins of a host: only where Postfix runs beside slapd or Dovecot."""
    if "mta" not in roles:
        return []
    replica = [("ExecStartPost", BACK_TO_REPLICA)] if "ldap-replica" in roles else []
    return [FileSpec(drop_in_path(unit), "_formats/ini.j2",
                     {"sections": [("Service", [("ExecStartPost", COMMANDS[unit]),
                                                *(replica if unit == "slapd" else [])])],
                      "header": f"Postfix retries its queue when {unit} (re)starts "
                                "(mailstack.plan.recovery says why)"})
            for role, unit in ROLE_UNITS.items() if role in roles]
