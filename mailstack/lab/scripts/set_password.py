"""Give one login of the provider's passwd-file another password.

Run in the provider container as ``python3 -c TEXT FILE USER PASSWORD_B64``.

A real file (linted like the rest) that mailstack.lab sends as the ``-c`` text.
"""
import os
import shutil
import sys
import time
from pathlib import Path

path, user, encoded = sys.argv[1:4]
lines = Path(path).read_text().splitlines()
prefix = user + ":"
new = [f"{user}:{{PLAIN.b64}}{encoded}::::::" if line.startswith(prefix) else line for line in lines]
if new == lines and not any(line.startswith(prefix) for line in lines):
    sys.exit(f"{user} is not in {path}")
tmp = path + ".lab-tmp"
with open(tmp, "w") as handle:
    handle.write("".join(line + "\n" for line in new))
shutil.chown(tmp, "root", "dovecot")
os.chmod(tmp, 0o640)
stamp = max(int(time.time()), int(os.stat(path).st_mtime) + 1)
os.utime(tmp, (stamp, stamp))
os.replace(tmp, path)
time.sleep(max(0.0, max(stamp, int(time.time())) + 1.05 - time.time()))
