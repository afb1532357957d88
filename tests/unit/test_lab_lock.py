"""Two `lab up` runs on one machine take turns choosing a subnet (mailstack/lab/lock.py)."""

from __future__ import annotations

import subprocess
import sys

from mailstack.lab import lock

# another process tries the same lock without waiting: exit 1 while it is held
TRY = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(1)
"""


def _other_gets_it() -> bool:
    proc = subprocess.run([sys.executable, "-c", TRY, str(lock.path("network"))],
                          capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


def test_the_lock_keeps_another_process_out_until_released(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert lock.path("network").parent == tmp_path
    with lock.held("network"):
        assert not _other_gets_it()
    assert _other_gets_it()
