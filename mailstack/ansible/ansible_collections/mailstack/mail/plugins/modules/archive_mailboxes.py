#!/usr/bin/python
"""Ansible module: move the mailboxes of pruned accounts to a dated archive folder."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: archive_mailboxes
short_description: Move pruned accounts' mailbox homes to a dated archive folder
description:
  - For each address, its mailbox home (C(<vmail_dir>/<domain>/<local>), as
    mailstack/plan/dit.mail_home() decides) is renamed to
    C(<archive_dir>/<UTC date>/<domain>/<local>) (C(.2), C(.3)... when taken). Nothing is
    ever deleted. An address without a mailbox is skipped.
options:
  addresses:
    description: The pruned accounts' mail addresses.
    type: list
    elements: str
    required: true
  vmail_dir:
    description: The mail store.
    type: path
    required: true
  archive_dir:
    description: The archive (on the mail store's file system, e.g. /var/vmail/.archive).
    type: path
    required: true
  uid:
    description: Owner of the archive directories (vmail).
    type: int
    required: true
  gid:
    description: Their group.
    type: int
    required: true
attributes:
  check_mode:
    support: full
author: mailstack
"""

RETURN = r"""
archived: {description: "[home, archive path] pairs.", type: list, returned: always}
mailstack_reconciled: {description: "[action, what] pairs for apply's recap.", type: list,
                       returned: always}
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.mailstack.mail.plugins.module_utils.reconcile import (  # noqa: E402
    archive_path,
    free_path,
    mail_home,
    utcnow,
)


def makedirs(path, uid, gid):
    """Create ``path`` and its missing parents, 0750, owned by uid:gid."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for d in reversed(missing):
        os.mkdir(d, 0o750)
        os.chown(d, uid, gid)


def main():
    module = AnsibleModule(
        argument_spec={
            "addresses": {"type": "list", "elements": "str", "required": True},
            "vmail_dir": {"type": "path", "required": True},
            "archive_dir": {"type": "path", "required": True},
            "uid": {"type": "int", "required": True},
            "gid": {"type": "int", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    now = utcnow()
    archived = []
    try:
        for address in p["addresses"]:
            home = mail_home(p["vmail_dir"], address)
            if not os.path.isdir(home):
                continue
            target = free_path(archive_path(p["archive_dir"], address, now))
            if not module.check_mode:
                makedirs(os.path.dirname(target), p["uid"], p["gid"])
                os.rename(home, target)
            archived.append([home, target])
    except OSError as err:
        module.fail_json(msg=f"{err.filename or ''}: {err.strerror or err}", archived=archived)
    module.exit_json(changed=bool(archived), archived=archived,
                     mailstack_reconciled=[["archived", f"{a} -> {b}"] for a, b in archived],
                     msg="; ".join(f"moved {a} to {b}" for a, b in archived) or "nothing to move")


if __name__ == "__main__":
    main()
