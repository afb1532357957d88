"""Reconcile: what apply does with what the site no longer has (pure, unit-tested).

Runs on the managed host (no mailstack package there) and in the unit tests. Two halves:

* the directory: which entries one level under the site's OUs (people, aliases, domains) left
  the render, and what locking one means (``mailstackEntry`` + ``mailstackLocked: TRUE``);
* the files: which paths and services the previous apply placed (``placed.json``, a copy of
  the host's part of the manifest) that the current manifest no longer has.
"""

from __future__ import annotations

import datetime
import os

SITE = "site"            # ldap.accounts: the site file owns which accounts exist
DIRECTORY = "directory"  # ldap.accounts: the directory does; apply only seeds the site's


def first_value(attrs, key):
    """The first value of attribute ``key`` (lower case) as text, or ''."""
    values = attrs.get(key, (key, []))[1]
    return values[0].decode("utf-8", "replace") if values else ""


def left_site(live, wanted_keys, mode, origin_attr="mailstackOrigin", origin_site="site"):
    """The live entries that are not in the render, ``[(dn, attrs)]`` in live order.

    ``live``: ``[(dn, attrs, key)]``, the entries one level under the reconciled OUs, ``key``
    the normalised DN; ``wanted_keys``: the rendered entries' normalised DNs; ``attrs``:
    ``{lower name: (name, [bytes])}``.

    Site mode: every such entry, whoever created it. Directory mode: only those apply created
    (``mailstackOrigin: site``); what the directory added itself is never touched.
    """
    out = []
    for dn, attrs, key in live:
        if key in wanted_keys:
            continue
        if mode == DIRECTORY and first_value(attrs, origin_attr.lower()).lower() != origin_site:
            continue
        out.append((dn, attrs))
    return out


def lock_changes(attrs, entry_class="mailstackEntry", locked_attr="mailstackLocked"):
    """``{attribute: [(op, values)]}`` (op names: add/replace) that lock an entry; {} when it
    already is locked."""
    classes = {v.decode("utf-8", "replace").lower()
               for v in attrs.get("objectclass", ("objectClass", []))[1]}
    changes = {}
    if entry_class.lower() not in classes:
        changes["objectClass"] = [("add", [entry_class.encode()])]
    if first_value(attrs, locked_attr.lower()).upper() != "TRUE":
        changes[locked_attr] = [("replace", [b"TRUE"])]
    return changes


def is_locked(attrs, locked_attr="mailstackLocked"):
    return first_value(attrs, locked_attr.lower()).upper() == "TRUE"


def mail_home(vmail_dir, address):
    """A mailbox's home, as mailstack/plan/dit.mail_home() decides it (unit-tested equal)."""
    local, _, domain = address.rpartition("@")
    return f"{vmail_dir}/{domain.lower()}/{local.lower()}"


def archive_path(archive_dir, address, now):
    """Where a pruned account's mailbox goes: ``<archive_dir>/<UTC date>/<domain>/<local>``."""
    local, _, domain = address.rpartition("@")
    return f"{archive_dir}/{now:%Y-%m-%d}/{domain.lower()}/{local.lower()}"


def free_path(path, exists=os.path.exists):
    """``path``, or ``path.2``, ``path.3``... when it is taken (a second prune the same day)."""
    if not exists(path):
        return path
    n = 2
    while exists(f"{path}.{n}"):
        n += 1
    return f"{path}.{n}"


def left_files(previous, current):
    """Paths the previous apply placed (``previous``: its host entry of the manifest) that the
    current manifest (``current``) no longer has, sorted, with whether each was secret."""
    old = (previous or {}).get("files") or {}
    new = (current or {}).get("files") or {}
    return [(path, bool(entry.get("secret"))) for path, entry in sorted(old.items())
            if path not in new]


def left_services(previous, current):
    """Services the host ran for the previous apply (``facts.other_services``) and no longer
    does, e.g. ``mailstack-fetch@<id>.timer`` of a removed remote mailbox."""
    def services(host):
        return ((host or {}).get("facts") or {}).get("other_services") or []
    now = set(services(current))
    return [s for s in services(previous) if s not in now]


def backup_target(backup_root, path, now):
    """Where a removed (non-secret) file is kept: ``<root>/removed-<UTC>/<path>``."""
    return os.path.join(backup_root, f"removed-{now:%Y%m%dT%H%M%SZ}", path.lstrip("/"))


def utcnow():
    return datetime.datetime.now(datetime.UTC)
