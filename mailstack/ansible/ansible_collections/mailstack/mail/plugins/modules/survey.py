#!/usr/bin/python
"""Ansible module: before mailstack changes a host for the first time, look for a mail stack
that someone else set up there, and refuse to overwrite it unless asked to take it over."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: survey
short_description: Refuse to overwrite a mail stack mailstack did not set up (or take it over)
description:
  - "Reads the host's marker (O(marker), JSON). When it names this site, the host is mailstack's
    and nothing is surveyed. A marker that only says C(prepared_by) (a mailstack recipe
    installed the packages, such as the lab image) counts as mailstack's too."
  - "Otherwise the host is surveyed: daemons listening on the mail ports, configurations a mail
    stack leaves (Postfix, Dovecot, slapd, Exim), mail that exists (mbox spools, Maildirs,
    Postfix's queue), and a marker of another site."
  - "Nothing found (a bare server) or O(take_over) given, the marker is written for this site
    and the apply goes on. With O(take_over), the configurations found are first copied to a
    dated folder below O(backup_dir); slapd's configuration and database (O(moved)) are moved
    there instead, so that mailstack builds its own directory. Mail is left where it is."
  - "Something found without O(take_over), the module fails before anything changed, listing
    what it found."
options:
  site: {description: "The site's name.", type: str, required: true}
  host: {description: "The host's name in the site.", type: str, required: true}
  marker: {description: Path of the marker file., type: str, required: true}
  ports:
    description: TCP ports on which a listener means a mail stack runs.
    type: list
    elements: int
    required: true
  configs:
    description: Configuration files and folders a mail stack leaves.
    type: list
    elements: str
    required: true
  moved:
    description: Of those (and other paths), what a take-over moves aside.
    type: list
    elements: str
    default: []
  spools:
    description: Mail spools and Maildirs (shell patterns).
    type: list
    elements: str
    required: true
  queue: {description: "Postfix's queue directory.", type: str, required: true}
  backup_dir: {description: Where a take-over keeps its dated copies., type: str, required: true}
  take_over: {description: Take over what is found., type: bool, default: false}
"""

RETURN = r"""
findings: {description: What was found, one line each., type: list, returned: always}
state: {description: "ours, prepared, bare, foreign or taken_over", type: str, returned: always}
backup: {description: The dated folder of a take-over., type: str, returned: when taken over}
"""

import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

PORT_NAMES = {25: "smtp", 465: "submissions", 587: "submission", 110: "pop3", 995: "pop3s",
              143: "imap", 993: "imaps", 389: "ldap", 636: "ldaps", 4190: "sieve"}
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
LISTEN = "0A"


def read_marker(path):
    """The marker's JSON object, {} when there is none; an unreadable one counts as foreign."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        return {"unreadable": str(err)}
    return data if isinstance(data, dict) else {"unreadable": "not a JSON object"}


def _hex_address(text):
    """An address of /proc/net/tcp{,6} ("0100007F:0019") as (ip text, port)."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        ip = ".".join(str(b) for b in raw[::-1])
    else:
        words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
        flat = b"".join(words)
        ip = ":".join(flat[i:i + 2].hex() for i in range(0, 16, 2))
        ip = {"0000:0000:0000:0000:0000:0000:0000:0000": "::",
              "0000:0000:0000:0000:0000:0000:0000:0001": "::1"}.get(ip, ip)
    return ip, int(port, 16)


def listeners(tables, ports):
    """[(port, ip, inode)] of listening TCP sockets on ``ports`` in /proc/net/tcp-style texts."""
    out = []
    for text in tables:
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            ip, port = _hex_address(fields[1])
            if port in ports:
                out.append((port, ip, fields[9]))
    return sorted(set(out))


def socket_owners(proc="/proc"):
    """{socket inode: process name} from /proc/PID/fd."""
    owners = {}
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            with open(f"{proc}/{pid}/comm", encoding="utf-8") as fh:
                name = fh.read().strip()
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(target[8:-1], name)
    return owners


def mbox_messages(path):
    """Messages in an mbox file (lines starting "From "), 0 when unreadable."""
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.startswith(b"From "))
    except OSError:
        return 0


def files_below(path, limit=100000):
    count = 0
    for _, _, files in os.walk(path):
        count += len(files)
        if count >= limit:
            break
    return count


def is_maildir(path):
    return any(os.path.isdir(os.path.join(path, sub)) for sub in ("cur", "new"))


def mail_found(spools, queue):
    """Lines naming the mail that exists: mbox files, Maildirs and other mail stores, the queue."""
    found = []
    for pattern in spools:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path) and os.path.getsize(path) > 0:
                found.append(f"mail: {path} holds {mbox_messages(path)} message(s) (mbox)")
            elif is_maildir(path):
                if files_below(path):
                    found.append(f"mail: {path} holds {files_below(path)} file(s)")
            elif os.path.isdir(path):
                for entry in sorted(os.listdir(path)):
                    full = os.path.join(path, entry)
                    if os.path.isfile(full) and os.path.getsize(full) > 0:
                        found.append(f"mail: {full} holds {mbox_messages(full)} message(s) (mbox)")
                    elif os.path.isdir(full) and files_below(full):
                        found.append(f"mail: {full} holds {files_below(full)} file(s)")
    queued = sum(files_below(os.path.join(queue, q)) for q in QUEUES
                 if os.path.isdir(os.path.join(queue, q)))
    if queued:
        found.append(f"mail: {queued} message(s) in Postfix's queue {queue}")
    return found


def configs_found(configs):
    found = []
    for path in configs:
        if os.path.isfile(path):
            found.append(f"configuration: {path}")
        elif os.path.isdir(path) and os.listdir(path):
            entries = sorted(os.listdir(path))
            shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
            found.append(f"configuration: {path}/ ({shown})")
    return found


def survey(params, proc="/proc"):
    """(state, findings) of the host; state is ours, prepared, bare or foreign."""
    marker = read_marker(params["marker"])
    if marker.get("site") == params["site"]:
        return "ours", []
    if marker.get("prepared_by") and not marker.get("site"):
        return "prepared", []
    findings = []
    if marker.get("site"):
        findings.append(f"marker: {params['marker']} says this host belongs to mailstack site "
                        f"{marker['site']!r} (host {marker.get('host')!r})")
    elif marker.get("unreadable"):
        findings.append(f"marker: {params['marker']} cannot be read: {marker['unreadable']}")
    tables = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/net/{name}", encoding="ascii") as fh:
                tables.append(fh.read())
        except OSError:
            pass
    owners = socket_owners(proc)
    for port, ip, inode in listeners(tables, set(params["ports"])):
        who = owners.get(inode, "a process")
        findings.append(f"listening: {who} on {ip} port {port} ({PORT_NAMES.get(port, 'mail')})")
    findings += configs_found(params["configs"])
    findings += mail_found(params["spools"], params["queue"])
    return ("foreign" if findings else "bare"), findings


STOP_SLAPD = ("systemctl", "stop", "slapd")


def take_over(params, stamp, stop=STOP_SLAPD):
    """Copy the configurations (move those in ``moved``, after ``stop``ping the daemon that
    uses them) to a dated folder; return it."""
    backup = os.path.join(params["backup_dir"], f"takeover-{stamp}")
    os.makedirs(backup, mode=0o700, exist_ok=True)
    moved = set(params["moved"])
    if stop and any(os.path.exists(p) for p in moved):
        subprocess.run(list(stop), check=False, capture_output=True)
    for path in list(dict.fromkeys([*params["configs"], *params["moved"]])):
        if not os.path.lexists(path):
            continue
        dest = backup + path
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if path in moved:
            shutil.move(path, dest)
            if path.startswith("/var/lib/"):  # the database folder itself stays, empty
                os.makedirs(path, exist_ok=True)
                shutil.copystat(dest, path)
                st = os.stat(dest)
                os.chown(path, st.st_uid, st.st_gid)
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.copytree(path, dest, symlinks=True)
        else:
            shutil.copy2(path, dest, follow_symlinks=False)
    return backup


def write_marker(params, extra):
    data = {"site": params["site"], "host": params["host"],
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    os.makedirs(os.path.dirname(params["marker"]), mode=0o755, exist_ok=True)
    tmp = params["marker"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, params["marker"])


def refusal(params, findings):
    return (f"{params['host']}: this host already runs mail that mailstack did not set up; "
            f"nothing was changed. Found: {'; '.join(findings)}. "
            "Re-run with --take-over to keep a dated copy of these configurations in "
            f"{params['backup_dir']}/takeover-<time>/ and apply the site (existing mail stays "
            "where it is).")


def main():
    module = AnsibleModule(
        argument_spec={
            "site": {"type": "str", "required": True},
            "host": {"type": "str", "required": True},
            "marker": {"type": "str", "required": True},
            "ports": {"type": "list", "elements": "int", "required": True},
            "configs": {"type": "list", "elements": "str", "required": True},
            "moved": {"type": "list", "elements": "str", "default": []},
            "spools": {"type": "list", "elements": "str", "required": True},
            "queue": {"type": "str", "required": True},
            "backup_dir": {"type": "str", "required": True},
            "take_over": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    state, findings = survey(params)
    if state == "ours":
        module.exit_json(changed=False, state=state, findings=[])
    if state == "foreign" and not params["take_over"]:
        module.fail_json(msg=refusal(params, findings), state=state, findings=findings)
    if module.check_mode:
        module.exit_json(changed=True, state=state, findings=findings)
    extra = {}
    if state == "foreign":
        extra["taken_over"] = take_over(params, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        state = "taken_over"
    write_marker(params, extra)
    module.exit_json(changed=True, state=state, findings=findings, backup=extra.get("taken_over"),
                     msg=("took over: " + "; ".join(findings)) if findings else
                     f"the host is mailstack's now ({state})")


if __name__ == "__main__":
    main()
