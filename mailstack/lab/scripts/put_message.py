"""Put the message on stdin into a Maildir (tmp/, then new/ or cur/ with :2,S).

Run in the provider container as ``python3 -c TEXT DIR NAME SEEN UID``.

A real file (linted like the rest) that mailstack.lab sends as the ``-c`` text.
"""
import os
import sys

base, name, seen, uid = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
data = sys.stdin.buffer.read()
tmp = os.path.join(base, "tmp", name)
with open(tmp, "wb") as handle:
    handle.write(data)
os.chown(tmp, uid, uid)
os.chmod(tmp, 0o600)
final = os.path.join(base, "cur", name + ":2,S") if seen else os.path.join(base, "new", name)
os.rename(tmp, final)
print(final)
