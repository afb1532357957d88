#!/usr/bin/python
"""Ansible module: stage, swap in, roll back and clean a daemon's configuration directory."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tree
short_description: Stage a configuration directory, swap it in whole, roll it back
description:
  - "The host side of mailstack's file applier for a daemon whose configuration is only valid
    as a whole (Postfix, Dovecot): O(state=stage) copies the live directory to a staging one
    (owners, modes and links kept), the role places the rendered files there and checks the
    whole with the daemon's own tools (a swap that was cut off between its two renames, so that
    O(live) is missing and O(prev) exists, is put back first), O(state=swap) moves the live directory aside to
    O(prev) and the staged one in (two renames), O(state=rollback) puts O(prev) back,
    O(state=clean) removes the staging directory."
  - "O(state=swap) returns the changed paths and, in diff mode, a unified diff per file
    (secret files: only that they change; their text never leaves the host). In check mode it
    reports what would change and moves nothing."
options:
  state:
    description: What to do.
    type: str
    required: true
    choices: [stage, swap, rollback, clean]
  live: {description: The live directory (e.g. /etc/postfix)., type: path, required: true}
  stage: {description: The staging directory., type: path, required: true}
  prev: {description: "Where the previous live directory is kept after a swap (O(state=stage):
    put back first when O(live) is missing).", type: path}
  files:
    description: "For O(state=swap): the rendered files below O(live), path -> {secret}."
    type: dict
    default: {}
  pending:
    description: "For O(state=swap): a file written just before the renames, holding
      O(pending_text); the role's handler removes it once the daemon has picked the new
      configuration up, so a reload that a lost connection cut off is done by the next apply."
    type: path
  pending_text: {description: What O(pending) holds (e.g. reload or restart)., type: str,
                 default: reload}
  swapped:
    description: "For O(state=rollback): the swap happened (else O(prev) goes back only when
      O(live) is missing, i.e. a swap was interrupted)."
    type: bool
    default: false
"""

RETURN = r"""
changed_paths: {description: The files that differ (swap)., type: list, returned: always}
since: {description: "Local time just before the swap (for journalctl --since).", type: str,
        returned: always}
"""

import difflib  # noqa: E402
import errno  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

HIDDEN = "(secret: diff hidden)"


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _remove(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def stage(live, staging, prev=None):
    """Copy ``live`` to ``staging``; first put ``prev`` back when a swap was cut off between its
    two renames (``live`` missing: e.g. the SSH connection dropped), so the stage is whole."""
    if prev and not os.path.lexists(live) and os.path.isdir(prev):
        _rename(prev, live)
    _remove(staging)
    if os.path.isdir(live):
        subprocess.run(["cp", "-a", live, staging], check=True, capture_output=True)
    else:
        os.makedirs(staging)


def changes(live, staging, files):
    """(changed paths, diff text) of the rendered files between live and staged."""
    paths, parts = [], []
    for path, entry in sorted(files.items()):
        rel = os.path.relpath(path, live)
        before, after = _read(path), _read(os.path.join(staging, rel))
        if before == after:
            continue
        paths.append(path)
        if entry.get("secret"):
            parts.append(f"--- {path}\n{HIDDEN}\n")
            continue
        old = (before or b"").decode("utf-8", "replace").splitlines(True)
        new = (after or b"").decode("utf-8", "replace").splitlines(True)
        parts.append("".join(difflib.unified_diff(
            old, new, path if before is not None else "/dev/null", path)))
    return paths, "".join(parts)


def _rename(src, dst):
    """rename(2), or mv where the kernel refuses (EXDEV: a directory of an overlayfs lower
    layer, as in a container whose image holds /etc/postfix). GNU mv keeps owners and modes."""
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        subprocess.run(["mv", "-T", src, dst], check=True, capture_output=True)


def swap(live, staging, prev, pending=None, pending_text="reload"):
    """Move ``live`` to ``prev`` and ``staging`` to ``live``; first note in ``pending`` that
    the daemon still has to pick the new configuration up."""
    if pending:
        os.makedirs(os.path.dirname(pending), exist_ok=True)
        with open(pending, "w", encoding="utf-8") as fh:
            fh.write(pending_text + "\n")
    _remove(prev)
    if os.path.exists(live):
        _rename(live, prev)
    _rename(staging, live)


def rollback(live, prev, swapped):
    """Put ``prev`` back: always after a swap, else only when ``live`` is missing."""
    if not os.path.exists(prev) or (not swapped and os.path.exists(live)):
        return False
    _remove(live)
    _rename(prev, live)
    return True


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "required": True,
                      "choices": ["stage", "swap", "rollback", "clean"]},
            "live": {"type": "path", "required": True},
            "stage": {"type": "path", "required": True},
            "prev": {"type": "path"},
            "files": {"type": "dict", "default": {}},
            "pending": {"type": "path"},
            "pending_text": {"type": "str", "default": "reload"},
            "swapped": {"type": "bool", "default": False},
        },
        required_if=[("state", "swap", ["prev"]), ("state", "rollback", ["prev"])],
        supports_check_mode=True,
    )
    p = module.params
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        if p["state"] == "stage":  # scratch: also in check mode, where it is the point
            stage(p["live"], p["stage"], p["prev"])
            module.exit_json(changed=False, changed_paths=[], since=since)
        if p["state"] == "clean":
            _remove(p["stage"])
            module.exit_json(changed=False, changed_paths=[], since=since)
        if p["state"] == "rollback":
            restored = False if module.check_mode else rollback(p["live"], p["prev"],
                                                                 p["swapped"])
            module.exit_json(changed=restored, restored=restored, changed_paths=[], since=since)
        paths, diff = changes(p["live"], p["stage"], p["files"])
        if not module.check_mode:
            swap(p["live"], p["stage"], p["prev"], p["pending"], p["pending_text"])
        result = {"changed": True, "changed_paths": paths, "since": since,
                  "msg": "swapped in: " + ", ".join(paths) if paths else "swapped in"}
        if module._diff and diff:
            result["diff"] = {"prepared": diff}
        module.exit_json(**result)
    except subprocess.CalledProcessError as err:  # cp or mv: their own words (No space left...)
        said = (err.stderr or b"").decode("utf-8", "replace").strip()
        module.fail_json(msg=f"{p['state']} of {p['live']}: {said or err}")
    except OSError as err:
        module.fail_json(msg=f"{p['state']} of {p['live']}: {err}")


if __name__ == "__main__":
    main()
