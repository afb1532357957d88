"""Count the messages per Message-ID in Maildirs (new/ and cur/), for IDs with a given prefix.

Run on the mail host as ``python3 -c TEXT PREFIX MAILDIR...``; prints {message-id: copies} as
JSON. Only the header section of each file is read.
"""
import json
import os
import sys

prefix, dirs = sys.argv[1], sys.argv[2:]
counts: dict[str, int] = {}
for base in dirs:
    for sub in ("new", "cur"):
        folder = os.path.join(base, sub)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            try:
                with open(os.path.join(folder, name), "rb") as handle:
                    head = handle.read(65536).split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
            except FileNotFoundError:  # moved from new/ to cur/ meanwhile
                continue
            for line in head.decode("utf-8", "replace").splitlines():
                if line.lower().startswith("message-id:"):
                    mid = line.split(":", 1)[1].strip()
                    if mid.startswith(prefix):
                        counts[mid] = counts.get(mid, 0) + 1
                    break
json.dump(counts, sys.stdout)
