"""verify: a part that cannot run is a failed check, never an empty output."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack import verify


def test_host_checks_that_cannot_run_are_a_failed_check(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\necho 'No module named pytest' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setattr(verify.sys, "executable", str(script))
    target = verify.Target("mail", "mail.example.org", "192.0.2.10")
    checks = verify._host_checks(target, tmp_path / "manifest.json")
    assert [(c.name, c.host, c.ok, c.detail) for c in checks] == [
        ("host: the host checks ran (testinfra)", "mail", False,
         "testinfra did not run: No module named pytest")]
