"""The tool as an admin installs it: a wheel built from this checkout, installed into a fresh
venv outside the checkout, run from another directory on a copy of the example. Templates,
roles, playbooks, the lab's fixtures and scripts must come from the package, never from the
current directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import mailstack
from tests.conftest import EXAMPLE, ROOT, copy_secrets, live

pytestmark = live()


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_a_wheel_installed_outside_the_checkout_checks_renders_and_runs_the_daemons(
        tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w",
                 str(dist)], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    wheel = next(dist.glob("mailstack-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    installed = run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                    cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    cli = str(env_dir / "bin" / "mailstack")
    work = tmp_path / "site"
    work.mkdir()
    shutil.copy(EXAMPLE, work / "site.yml")
    copy_secrets(work / "secrets")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    version = run([cli, "--version"], cwd=elsewhere)
    assert version.stdout.strip() == f"mailstack {mailstack.__version__}"
    where = run([str(env_dir / "bin" / "python"), "-c",
                 "import mailstack.resources as r; print(r.TEMPLATES); print(r.ROLES)"],
                cwd=elsewhere)
    assert str(ROOT) not in where.stdout and str(env_dir) in where.stdout, where.stdout
    check = run([cli, "check", str(work / "site.yml")], cwd=elsewhere)
    assert check.returncode == 0, check.stderr
    render = run([cli, "render", str(work / "site.yml"), "-o", str(work / "build")],
                 cwd=elsewhere)
    assert render.returncode == 0, render.stderr
    assert (work / "build" / "krasnoyarsk" / "mail" / "etc" / "postfix" / "main.cf").is_file()
    daemons = run([cli, "check", str(work / "site.yml"), "--with-daemons"], cwd=elsewhere)
    assert daemons.returncode == 0, daemons.stdout + daemons.stderr
    assert "FAIL" not in daemons.stdout
