"""The scripts the lab runs in containers are real files; here they run on this machine the way
the lab sends them (``python3 -c TEXT ARGS``), on a Maildir in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mailstack.resources import lab_script


def run(name: str, *args: str, stdin: str = "") -> str:
    proc = subprocess.run([sys.executable, "-c", lab_script(name), *args], input=stdin,
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_message_put_into_a_maildir_is_read_back_in_order(tmp_path: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        (tmp_path / sub).mkdir()
    uid = str(os.getuid())
    first = run("put_message.py", str(tmp_path), "a", "0", uid, stdin="Subject: one\n\n1\n")
    second = run("put_message.py", str(tmp_path), "b", "1", uid, stdin="Subject: two\n\n2\n")
    assert first.strip() == str(tmp_path / "new" / "a")
    assert second.strip() == str(tmp_path / "cur" / "b:2,S")  # read at the provider
    os.utime(tmp_path / "new" / "a", ns=(1, 1))  # older
    assert json.loads(run("read_maildir.py", str(tmp_path))) == [
        "Subject: one\n\n1\n", "Subject: two\n\n2\n"]
    assert not list((tmp_path / "tmp").iterdir())


def test_every_lab_script_is_valid_python_with_a_docstring() -> None:
    from mailstack import resources

    for path in sorted(resources.LAB_SCRIPTS.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        compile(text, str(path), "exec")
        assert text.startswith('"""'), path
