"""Install a lab fixture's files (copied in as PATH.lab-new) and restart only what changed.

Run in a stand-in container as ``python3 -c TEXT SPEC_JSON``; prints what it restarted.

A real file (linted like the rest) that mailstack.lab sends as the ``-c`` text.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

spec = json.loads(sys.argv[1])
changed = set()

def owner(path, spec_owner):
    user, _, group = spec_owner.partition(":")
    def conv(v):
        return int(v) if v.isdigit() else v
    shutil.chown(path, conv(user), conv(group or user))

def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True)

def digest(*paths):
    h = hashlib.sha256()
    for p in paths:
        try:
            h.update(Path(p).read_bytes())
        except FileNotFoundError:
            h.update(b"-")
    return h.hexdigest()

for path, own, mode in spec["dirs"]:
    os.makedirs(path, exist_ok=True)
    owner(path, own)
    os.chmod(path, mode)
units = False
for f in spec["files"]:
    new = f["path"] + ".lab-new"
    owner(new, f["owner"])
    os.chmod(new, f["mode"])
    try:
        same = Path(new).read_bytes() == Path(f["path"]).read_bytes()
    except FileNotFoundError:
        same = False
    if same:
        os.remove(new)
        owner(f["path"], f["owner"])
        os.chmod(f["path"], f["mode"])
    else:
        os.replace(new, f["path"])
        if f["tag"]:
            changed.add(f["tag"])
        units = units or f["path"].startswith("/etc/systemd/")
if units:
    run("systemctl", "daemon-reload")

if spec["smtpd"] is not None:
    before = digest("/etc/postfix/master.cf")
    want = {("smtp" if int(p) == 25 else str(p)): kind for p, kind in spec["smtpd"].items()}
    for line in run("postconf", "-M").stdout.splitlines():
        f = line.split()
        if len(f) >= 8 and f[1] == "inet" and f[7] == "smtpd" and f[0] not in want:
            run("postconf", "-MX", f[0] + "/inet")
    for svc, kind in want.items():
        if not run("postconf", "-M", svc + "/inet").stdout.strip():
            run("postconf", "-M", f"{svc}/inet={svc} inet n - y - - smtpd")
        opts = {"smtpd_tls_wrappermode": "yes" if kind == "smtps" else None,
                "smtpd_tls_security_level": "encrypt" if kind == "smtp-encrypt" else None}
        have = run("postconf", "-P", *[f"{svc}/inet/{k}" for k in opts]).stdout
        for k, v in opts.items():
            cur = next((line.split("=", 1)[1].strip() for line in have.splitlines()
                        if line.split("=", 1)[0].strip() == f"{svc}/inet/{k}"), None)
            if v is not None and cur != v:
                run("postconf", "-P", f"{svc}/inet/{k}={v}")
            elif v is None and cur is not None:
                run("postconf", "-PX", f"{svc}/inet/{k}")
    if digest("/etc/postfix/master.cf") != before:
        changed.add("postfix")

for log in spec["logs"]:
    open(log, "a").close()

checks = {"postfix": ["postfix", "check"], "dovecot": ["doveconf", "-n"]}
for daemon in spec["daemons"]:
    if daemon not in changed and run("systemctl", "-q", "is-active", daemon).returncode == 0:
        continue
    proc = run(*checks[daemon])
    noise = proc.stderr.strip() if daemon == "dovecot" else (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or noise:
        sys.exit(f"{' '.join(checks[daemon])}: {noise or 'exit ' + str(proc.returncode)}")
    proc = run("systemctl", "restart", daemon)
    if proc.returncode != 0:
        status = run("systemctl", "status", "--no-pager", "-n", "15", daemon).stdout
        sys.exit(f"systemctl restart {daemon} failed:\n{proc.stderr}\n{status}")
    print(daemon)
