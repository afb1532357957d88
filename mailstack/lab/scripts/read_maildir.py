"""Print a Maildir's messages as a JSON list, oldest first.

Run in a container as ``python3 -c TEXT MAILDIR``.

A real file (linted like the rest) that mailstack.lab sends as the ``-c`` text.
"""
import json
import os
import sys

base = sys.argv[1]
found = []
for sub in ("new", "cur"):
    folder = os.path.join(base, sub)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        continue
    for name in names:
        path = os.path.join(folder, name)
        with open(path, "rb") as handle:
            data = handle.read().decode("utf-8", "surrogateescape")
        found.append((os.stat(path).st_mtime_ns, name, data))
found.sort()
json.dump([data for _, _, data in found], sys.stdout)
