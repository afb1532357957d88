#!/usr/bin/python
"""Ansible module: compare the host's files with the manifest's in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compare
short_description: Which of the manifest's files differ on the host (content, mode, owner, group)
description:
  - One call for any number of files, where a loop of ansible.builtin.stat costs one round trip
    per file. Never changes anything.
options:
  files:
    description: The manifest's entries, path -> {sha256, mode, owner, group}.
    type: dict
    required: true
"""

RETURN = r"""
differ: {description: The paths that differ or are missing, sorted., type: list, returned: always}
why: {description: "path -> what differs (missing, content, mode, owner, group)", type: dict,
      returned: always}
"""

import grp  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import stat  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def compare(files):
    """{path: [what differs]} for every file that is not as the manifest says."""
    why = {}
    for path, want in sorted(files.items()):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            why[path] = ["missing"]
            continue
        if not stat.S_ISREG(st.st_mode):
            why[path] = ["not a file"]
            continue
        problems = []
        if sha256(path) != want["sha256"]:
            problems.append("content")
        if f"{stat.S_IMODE(st.st_mode):04o}" != want["mode"]:
            problems.append("mode")
        if _name(pwd.getpwuid, st.st_uid) != want["owner"]:
            problems.append("owner")
        if _name(grp.getgrgid, st.st_gid) != want["group"]:
            problems.append("group")
        if problems:
            why[path] = problems
    return why


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    why = compare(module.params["files"])
    module.exit_json(changed=False, differ=sorted(why), why=why)


if __name__ == "__main__":
    main()
