"""Shared fixtures: the bundled example, copies of it with fixed secrets, a site writer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mailstack.apply import ApplyReport

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "inventories" / "branch-office" / "site.yml"
FIXED_SECRETS = ROOT / "tests" / "fixtures" / "secrets"


def copy_secrets(dest: Path) -> Path:
    shutil.copytree(FIXED_SECRETS, dest, ignore=shutil.ignore_patterns("README.md"))
    for path in dest.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    return dest


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the bundled example with the fixed secrets beside it."""
    site = tmp_path / "site.yml"
    shutil.copy(EXAMPLE, site)
    copy_secrets(tmp_path / "secrets")
    return site


@pytest.fixture
def write_site(tmp_path: Path):
    """Write a site file (with the fixed secrets beside it) and return its path."""
    copy_secrets(tmp_path / "secrets")

    def write(text: str, name: str = "site.yml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def live(*, ssh: bool = False, ansible: bool = False, bare: bool = False
         ) -> list[pytest.MarkDecorator]:
    """A live module's marks: ``live``, and a skip saying what is missing (podman, the images,
    ssh, Ansible). `make test` installs all of them first, so in CI nothing is skipped."""
    from mailstack.container import BARE_IMAGE, IMAGE, image_exists, podman_available

    reason = None
    if not podman_available():
        reason = "podman is not available: run `mailstack lab setup`"
    elif not image_exists(IMAGE):
        reason = f"image {IMAGE} is missing: run `mailstack lab setup`"
    elif bare and not image_exists(BARE_IMAGE):
        reason = f"image {BARE_IMAGE} is missing: run `mailstack lab setup`"
    elif ssh and (shutil.which("ssh") is None or shutil.which("ssh-keygen") is None):
        reason = "ssh and ssh-keygen are needed: apt-get install openssh-client"
    elif ansible:
        from mailstack import apply
        from mailstack.errors import ToolError

        try:
            apply.ansible_playbook()
        except ToolError as err:
            reason = str(err)
    return [pytest.mark.live, *([pytest.mark.skip(reason=reason)] if reason else [])]


class LabSite:
    """A site whose lab is up (lab.up done): its state and a shell on its host ``mail``."""

    def __init__(self, site: Path, build: Path) -> None:
        from mailstack import lab
        from mailstack.container import Container

        self.site, self.build = site, build
        self.state = lab.state(site, build_dir=build)
        self.mail = Container(self.state.host("mail").name)

    def apply(self) -> ApplyReport:
        """Apply the site to its lab; it must succeed; its report."""
        from mailstack import apply

        report = apply.apply(self.site, inventory=self.state.inventory, build_dir=self.build,
                             out=lambda line: None)
        assert report.ok, report.lines()
        return report

    def entry(self, dn: str) -> dict[str, list[str]] | None:
        """The entry as root reads it over ldapi ({lower attribute: values}), or None."""
        proc = self.mail.exec(["ldapsearch", "-Q", "-LLL", "-o", "ldif-wrap=no", "-Y", "EXTERNAL",
                               "-H", "ldapi:///", "-s", "base", "-b", dn, "*"], timeout=60)
        if proc.returncode == 32:
            return None
        assert proc.returncode == 0, proc.stderr
        out: dict[str, list[str]] = {}
        for line in proc.stdout.splitlines()[1:]:
            name, _, value = line.partition(": ")
            if name:
                out.setdefault(name.lower(), []).append(value)
        return out

    def sh(self, script: str) -> str:
        """Run ``script`` on the host; it must succeed; its stdout."""
        proc = self.mail.exec(["sh", "-c", script], timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def example_lab_site(root: Path, prefix: str) -> tuple[Path, Path]:
    """A copy of the example under a unique site name (so labs never collide), with the lab's
    outside secrets and generated secrets beside it; returns (site file, build dir)."""
    import uuid

    from mailstack import lab, secrets
    from mailstack.site.load import load_site

    site = root / "site.yml"
    site.write_text(EXAMPLE.read_text().replace("site: krasnoyarsk",
                                                f"site: {prefix}{uuid.uuid4().hex[:6]}", 1))
    build = root / "build"
    lab.ensure_outside_secrets(site, build_dir=build)
    secrets.generate(load_site(site), root / "secrets")
    return site, build
