#!/usr/bin/python
"""Ansible module: remove what an earlier apply placed and the site no longer renders."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: placed
short_description: Remove the files and stop the services an earlier apply placed and the site dropped
description:
  - C(state=record) (at the end of a successful apply) keeps a copy of the host's part of the
    manifest in O(record).
  - C(state=remove) compares that record with the current manifest entry O(host). Services the
    host ran then and no longer does (C(facts.other_services), e.g. the timer of a removed remote
    mailbox) are stopped and disabled (a timer's service too). Files placed then and no longer
    rendered are moved to C(<backup_dir>/removed-<UTC>/<path>); secret files (password files)
    are deleted, never copied. Removed unit files make systemd reload.
  - Without a record (the first apply that keeps one) nothing is removed.
options:
  state:
    description: C(remove) or C(record).
    type: str
    choices: [remove, record]
    required: true
  site:
    description: The site's name (a record of another site is ignored).
    type: str
    required: true
  host:
    description: This host's entry of the manifest (files, facts.other_services).
    type: dict
    required: true
  record:
    description: Where the record is kept.
    type: path
    default: /var/lib/mailstack/placed.json
  backup_dir:
    description: Where removed files are kept (C(removed-<UTC>/) below it).
    type: path
    default: /var/backups/mailstack
attributes:
  check_mode:
    support: full
author: mailstack
"""

RETURN = r"""
removed: {description: Files moved to the backup., type: list, returned: always}
deleted: {description: Secret files deleted., type: list, returned: always}
stopped: {description: Units stopped and disabled., type: list, returned: always}
backup: {description: The backup directory of this run (when something was kept)., type: str,
         returned: always}
mailstack_reconciled: {description: "[action, what] pairs for apply's recap.", type: list,
                       returned: always}
"""

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mailstack.mail.plugins.module_utils.reconcile import (  # noqa: E402
    backup_target,
    left_files,
    left_services,
    utcnow,
)

UNIT_DIR = "/etc/systemd/system/"


def read_record(path, site):
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("site") != site:
        return None
    return data.get("host")


def record_text(site, host):
    """What is kept: each file's path and whether it is secret, and the other services (no
    checksums: a secret file's would be a password's hash)."""
    kept = {"files": {path: {"secret": bool(entry.get("secret")), "role": entry.get("role")}
                      for path, entry in (host.get("files") or {}).items()},
            "facts": {"other_services": (host.get("facts") or {}).get("other_services") or []}}
    return json.dumps({"site": site, "host": kept}, indent=1, sort_keys=True) + "\n"


def write_record(path, text):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".placed-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def stop(module, unit):
    """Stop and disable ``unit``; a timer's service too (a run in progress)."""
    commands = [["systemctl", "disable", "--now", unit]]
    if unit.endswith(".timer"):
        commands.append(["systemctl", "stop", unit[:-len(".timer")] + ".service"])
    for argv in commands:
        code, _, err = module.run_command(argv)
        if code != 0 and "not loaded" not in err and "does not exist" not in err:
            module.fail_json(msg=f"{' '.join(argv)} failed: {err.strip()}")


def remove(module):
    params = module.params
    previous = read_record(params["record"], params["site"])
    files = left_files(previous, params["host"])
    units = left_services(previous, params["host"])
    present = [(p, secret) for p, secret in files if os.path.lexists(p)]
    now = utcnow()
    backup = os.path.join(params["backup_dir"], f"removed-{now:%Y%m%dT%H%M%SZ}")
    removed = [p for p, secret in present if not secret]
    deleted = [p for p, secret in present if secret]
    if not module.check_mode:
        for unit in units:
            stop(module, unit)
        for path, secret in present:
            if secret:
                os.unlink(path)
            else:
                target = backup_target(params["backup_dir"], path, now)
                os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
                shutil.move(path, target)
            parent = os.path.dirname(path)
            if parent.startswith(UNIT_DIR) and parent.endswith(".d") and not os.listdir(parent):
                os.rmdir(parent)  # a removed timer's drop-in directory
        if any(p.startswith(UNIT_DIR) for p, _ in present):
            module.run_command(["systemctl", "daemon-reload"], check_rc=True)
    reconciled = ([["stopped", u] for u in units] + [["removed", p] for p in removed]
                  + [["deleted", p] for p in deleted])
    parts = []
    if units:
        parts.append("stopped and disabled " + ", ".join(units))
    if removed:
        parts.append(f"removed {', '.join(removed)} (kept in {backup})")
    if deleted:
        parts.append("deleted the secret files " + ", ".join(deleted))
    module.exit_json(changed=bool(units or present), removed=removed, deleted=deleted,
                     stopped=units, backup=backup if removed else "",
                     mailstack_reconciled=reconciled, msg="; ".join(parts) or "nothing left over")


def record(module):
    params = module.params
    text = record_text(params["site"], params["host"])
    try:
        with open(params["record"], encoding="utf-8") as fh:
            same = fh.read() == text
    except OSError:
        same = False
    if not same and not module.check_mode:
        write_record(params["record"], text)
    module.exit_json(changed=not same, msg="" if same else f"recorded in {params['record']}")


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "required": True, "choices": ["remove", "record"]},
            "site": {"type": "str", "required": True},
            "host": {"type": "dict", "required": True},
            "record": {"type": "path", "default": "/var/lib/mailstack/placed.json"},
            "backup_dir": {"type": "path", "default": "/var/backups/mailstack"},
        },
        supports_check_mode=True,
    )
    try:
        if module.params["state"] == "remove":
            remove(module)
        else:
            record(module)
    except OSError as err:
        module.fail_json(msg=f"{err.filename or ''}: {err.strerror or err}")


if __name__ == "__main__":
    main()
