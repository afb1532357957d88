"""Wait until the messages of a delivery run are in their Maildirs; count them; remove them.

Run on the mail host as ``python3 -c TEXT`` with a JSON job on stdin: {"to": [addresses],
"each": messages per address, "timeout": seconds}. Prints ``ready`` once the Maildirs' present
files are noted, then, when each address has ``each`` new files (or at the deadline), one JSON
line: {"landed", "distinct" (distinct Postfix queue IDs of port 25's Received header: a message
delivered twice counts once here), "done_at" (time.time() when the last one landed)}. The
recipients' whole Maildirs (indexes included) are removed afterwards, so that every run starts
from the same empty mailboxes (Dovecot makes them again at the first delivery).
"""
import json
import os
import re
import shutil
import sys
import time

job = json.load(sys.stdin)
dirs = []
for address in job["to"]:
    local, _, domain = address.partition("@")
    dirs.append(f"/var/vmail/{domain}/{local}/Maildir/new")


def names(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()


before = {d: names(d) for d in dirs}
print("ready", flush=True)
deadline = time.time() + job["timeout"]
want = job["each"]
pending = list(dirs)
while pending and time.time() < deadline:
    pending = [d for d in pending if len(names(d) - before[d]) < want]
    if pending:
        time.sleep(0.02)
done_at = time.time()
QUEUE_ID = re.compile(rb"\(Postfix\) with E?SMTP id ([0-9A-Za-z]+)")
ids = []
for d in dirs:
    for name in sorted(names(d) - before[d]):
        path = os.path.join(d, name)
        with open(path, "rb") as f:
            found = QUEUE_ID.search(f.read(8192))
        ids.append(found.group(1) if found else name.encode())
    shutil.rmtree(os.path.dirname(d), ignore_errors=True)
print(json.dumps({"landed": len(ids), "distinct": len(set(ids)), "done_at": done_at,
                  "pending": pending}))
