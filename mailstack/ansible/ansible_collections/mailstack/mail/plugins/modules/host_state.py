#!/usr/bin/python
"""Ansible module: read in one round trip what the roles would otherwise ask task by task
(packages, users and groups, directories, services), so that a re-apply that changes nothing
skips the tasks whose work is already done."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_state
short_description: The host's packages, users, groups, directories and services, in one call
description:
  - Never changes anything. Each question is optional; the answers say what is not as wanted,
    and the tasks that would put it right run only for that (a loop of ansible.builtin.user,
    file or systemd_service costs one round trip per item, even when nothing changes).
options:
  packages:
    description: Debian packages; those not installed are returned in O(missing).
    type: list
    elements: str
    default: []
  groups:
    description: "Groups that must exist: {name, gid (optional)}."
    type: list
    elements: dict
    default: []
  users:
    description: "Users that must exist as given: {name, uid (optional), group, home, shell}."
    type: list
    elements: dict
    default: []
  system_users:
    description: "System users as the base role makes them: each with a group of its name, home
      /nonexistent and the shell O(system_shell)."
    type: list
    elements: str
    default: []
  system_shell: {description: The system users' shell., type: str, default: /usr/sbin/nologin}
  dirs:
    description: "Directories that must exist with an owner, group (names or numbers) and mode:
      {paths, owner, group, mode}."
    type: list
    elements: dict
    default: []
  paths:
    description: Paths whose existence is returned in O(exist).
    type: list
    elements: str
    default: []
  units:
    description: systemd units whose state is returned in O(units).
    type: list
    elements: str
    default: []
"""

RETURN = r"""
missing: {description: The packages not installed, in the order given., type: list,
          returned: always}
accounts: {description: "What differs of the groups and users, one line each (empty: all as
           wanted).", type: list, returned: always}
dirs: {description: The directories missing or not as wanted., type: list, returned: always}
exist: {description: "Of O(paths), those that exist (a dangling symlink too).", type: list,
        returned: always}
units: {description: "unit -> {active, enabled}: active now; enabled as systemctl is-enabled
        counts it (exit 0: enabled, static, ...).", type: dict, returned: always}
"""

import grp  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

# systemctl is-enabled exits 0 for these (systemctl(1)); ansible.builtin.systemd_service then
# counts the unit as enabled and changes nothing
SYSTEM_HOME = "/nonexistent"
ENABLED = {"enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "transient"}


def missing_packages(packages, run=subprocess.run):
    if not packages:
        return []
    proc = run(["dpkg-query", "--show", "--showformat=${Package} ${db:Status-Status};",
                *packages], capture_output=True, text=True, check=False)
    installed = {line.split()[0] for line in proc.stdout.split(";")
                 if len(line.split()) == 2 and line.split()[1] == "installed"}
    return [p for p in packages if p not in installed]


def _id(value, lookup):
    """A user or group given by name or number, as its number (None: no such name)."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    try:
        return lookup(str(value))[2]
    except KeyError:
        return None


def account_problems(groups, users):
    out = []
    for want in groups:
        try:
            have = grp.getgrnam(want["name"])
        except KeyError:
            out.append(f"group {want['name']}: missing")
            continue
        if want.get("gid") is not None and have.gr_gid != int(want["gid"]):
            out.append(f"group {want['name']}: gid {have.gr_gid}, not {want['gid']}")
    for want in users:
        try:
            have = pwd.getpwnam(want["name"])
        except KeyError:
            out.append(f"user {want['name']}: missing")
            continue
        if want.get("uid") is not None and have.pw_uid != int(want["uid"]):
            out.append(f"user {want['name']}: uid {have.pw_uid}, not {want['uid']}")
        if have.pw_gid != _id(want["group"], grp.getgrnam):
            out.append(f"user {want['name']}: not in group {want['group']}")
        for field, value in (("home", have.pw_dir), ("shell", have.pw_shell)):
            if want.get(field) is not None and value != want[field]:
                out.append(f"user {want['name']}: {field} {value}, not {want[field]}")
    return out


def dirs_differ(dirs):
    out = []
    for want in dirs:
        uid, gid = _id(want["owner"], pwd.getpwnam), _id(want["group"], grp.getgrnam)
        for path in want["paths"]:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                out.append(path)
                continue
            if (not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_gid != gid
                    or stat.S_IMODE(st.st_mode) != int(str(want["mode"]), 8)):
                out.append(path)
    return out


def unit_states(units, run=subprocess.run):
    """{unit: {active, enabled}} from one ``systemctl show``; a unit systemd does not know is
    neither."""
    out = {u: {"active": False, "enabled": False} for u in units}
    if not units:
        return out
    proc = run(["systemctl", "show", "--property=Id,ActiveState,UnitFileState", "--", *units],
               capture_output=True, text=True, check=False)
    # one block per unit, in the order asked, separated by an empty line; a unit without its
    # block (systemctl failed) keeps "neither", and the task that starts it runs
    blocks = proc.stdout.strip("\n").split("\n\n")
    for unit, block in zip(units, blocks, strict=False):
        props = dict(line.partition("=")[::2] for line in block.splitlines())
        out[unit] = {"active": props.get("ActiveState") == "active",
                     "enabled": props.get("UnitFileState") in ENABLED}
    return out


def main():
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "groups": {"type": "list", "elements": "dict", "default": []},
            "users": {"type": "list", "elements": "dict", "default": []},
            "system_users": {"type": "list", "elements": "str", "default": []},
            "system_shell": {"type": "str", "default": "/usr/sbin/nologin"},
            "dirs": {"type": "list", "elements": "dict", "default": []},
            "paths": {"type": "list", "elements": "str", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    groups = p["groups"] + [{"name": name} for name in p["system_users"]]
    users = p["users"] + [{"name": name, "group": name, "home": SYSTEM_HOME,
                           "shell": p["system_shell"]} for name in p["system_users"]]
    module.exit_json(changed=False, missing=missing_packages(p["packages"]),
                     accounts=account_problems(groups, users),
                     dirs=dirs_differ(p["dirs"]),
                     exist=[path for path in p["paths"] if os.path.lexists(path)],
                     units=unit_states(p["units"]))


if __name__ == "__main__":
    main()
