#!/usr/bin/python
"""Ansible module: refuse to go on while Postfix's queue file system is too full to take mail."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: queue_space
short_description: Fail clearly when Postfix's queue has no room for mail
description:
  - "Postfix's SMTP server refuses every MAIL FROM with C(452 4.3.1 Insufficient system storage)
    while the queue file system has less free space than C(queue_minfree) or 1.5 times
    C(message_size_limit) (postconf(5)). Mail is not lost (senders retry), but nothing arrives:
    this module says so, with the figures, before anything of Postfix changes."
  - "Reads the live C(queue_directory), C(message_size_limit) and C(queue_minfree) with
    postconf; passes when Postfix is not installed yet."
options:
  host: {description: The host's name in the site (for the message)., type: str, required: true}
"""

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def need(message_size_limit, queue_minfree):
    """Bytes of free space Postfix's smtpd wants before it takes mail (postconf(5))."""
    return max(queue_minfree, message_size_limit * 3 // 2)


def size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def verdict(host, queue_dir, free, message_size_limit, queue_minfree):
    """None when Postfix has room, else the message that says what is wrong."""
    wanted = need(message_size_limit, queue_minfree)
    if free >= wanted:
        return None
    why = (f"queue_minfree {size(queue_minfree)}" if queue_minfree >= message_size_limit * 3 // 2
           else f"1.5 x message_size_limit {size(message_size_limit)}")
    return (f"{host}: Postfix's queue file system ({queue_dir}) has {size(free)} free, less than "
            f"the {size(wanted)} Postfix needs to take mail ({why}): it answers every sender "
            "'452 4.3.1 Insufficient system storage' (they retry later; nothing is lost) until "
            "there is room. Nothing of Postfix was changed: free space there and apply again.")


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    if shutil.which("postconf") is None:
        module.exit_json(changed=False, msg="Postfix is not installed yet")
    proc = subprocess.run(["postconf", "-h", "queue_directory", "message_size_limit",
                           "queue_minfree"], capture_output=True, text=True, check=False)
    try:
        queue_dir, limit, minfree = proc.stdout.split()
        limit_n, minfree_n = int(limit), int(minfree)
    except ValueError:
        module.fail_json(msg=f"postconf: {proc.stderr.strip() or proc.stdout.strip()}")
    st = os.statvfs(queue_dir)
    free = st.f_bavail * st.f_frsize
    message = verdict(module.params["host"], queue_dir, free, limit_n, minfree_n)
    if message:
        module.fail_json(msg=message, free=free, need=need(limit_n, minfree_n))
    module.exit_json(changed=False, free=free, need=need(limit_n, minfree_n))


if __name__ == "__main__":
    main()
