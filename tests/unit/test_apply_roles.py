"""The roles and the playbook against the plan: paths, placeholder, who places which file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mailstack import apply as applying
from mailstack import core, resources
from mailstack.errors import ToolError
from mailstack.plan import dit, facts
from tests.conftest import copy_secrets, example_text

ROOT = Path(__file__).resolve().parents[2]
ROLES = resources.ROLES
DAEMON_ROLES = {"mailstack_slapd": "ldap", "mailstack_postfix": "mta", "mailstack_dovecot": "imap"}


def defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())


def test_slapd_role_paths_are_the_plans() -> None:
    d = defaults("mailstack_slapd")
    assert d["mailstack_slapd__config_ldif"] == facts.CONFIG_LDIF
    assert d["mailstack_slapd__dit_ldif"] == facts.DIT_LDIF
    assert d["mailstack_slapd__config_dir"] == facts.SLAPD_D
    assert d["mailstack_slapd__db_dir"] == facts.SLAPD_DB_DIR
    assert d["mailstack_slapd__run_dir"] == facts.SLAPD_RUN_DIR
    assert d["mailstack_slapd__ldapi_uri"] == facts.LDAPI_URI
    assert d["mailstack_slapd__placeholder"] == dit.PLACEHOLDER_PASSWORD


def test_base_leaves_exactly_the_daemon_roles_paths_to_them() -> None:
    base = defaults("mailstack_base")["mailstack_base__daemon_path_regex"]
    daemons = [defaults(r)[f"{r}__path_regex"] for r in DAEMON_ROLES]
    probes = ["/etc/postfix/main.cf", "/etc/postfix/ldap/x.cf", "/etc/mailname", "/etc/dovecot/x",
              "/etc/ldap/tls/k", "/etc/default/slapd", "/var/lib/mailstack/ldap/dit.ldif",
              "/etc/mailstack/tls/ca.crt", "/etc/mailstack/fetch/x", "/etc/postfix2/x",
              "/etc/default/slapd.bak", "/etc/mailname2", "/etc/systemd/system/x.service"]
    for path in probes:
        assert bool(re.match(base, path)) == any(re.match(d, path) for d in daemons), path


def test_every_rendered_file_is_placed_by_exactly_one_role(tmp_path: Path) -> None:
    """The example has every kind of file: directory, Postfix, Dovecot, TLS, getmail6 units."""
    site = tmp_path / "site.yml"
    site.write_text(example_text())
    copy_secrets(tmp_path / "secrets")
    tree = core.render(site, tmp_path / "build")
    manifest = yaml.safe_load((tree / "manifest.json").read_text())
    assert any("/etc/mailstack/fetch/" in p for p in manifest["hosts"]["mail"]["files"])
    base = defaults("mailstack_base")["mailstack_base__daemon_path_regex"]
    for name, host in manifest["hosts"].items():
        for path in host["files"]:
            owners = [r for r in DAEMON_ROLES if re.match(defaults(r)[f"{r}__path_regex"], path)]
            if not re.match(base, path):
                owners.append("mailstack_base")
            assert len(owners) == 1, (name, path, owners)
            if owners[0] in DAEMON_ROLES:
                assert DAEMON_ROLES[owners[0]] in host["roles"], (name, path)


def test_the_playbook_and_roles_pass_ansibles_syntax_check(tmp_path: Path) -> None:
    try:
        executable = applying.ansible_playbook()
    except ToolError:
        pytest.skip("ansible-playbook is not installed")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    mail: {}\n")
    proc = subprocess.run(
        [executable, "--syntax-check", str(applying.PLAYBOOK), "-i", str(inventory)],
        capture_output=True, text=True, timeout=120, check=False,
        env={"ANSIBLE_CONFIG": str(applying.ANSIBLE_CFG), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize("role", ["mailstack_postfix", "mailstack_dovecot"])
def test_check_scripts_pass_shellcheck(role: str) -> None:
    script = ROLES / role / "files" / "check-staged-config.sh"
    proc = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout
