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
from mailstack.plan import PICKUPS, PLACERS, dit, layout
from tests.conftest import copy_secrets, example_text

ROOT = Path(__file__).resolve().parents[2]
ROLES = resources.ROLES
DAEMON_ROLES = {"slapd": "ldap", "postfix": "mta", "dovecot": "imap"}


def defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())


def test_the_roles_read_paths_placeholder_and_services_from_the_manifest(example, tmp_path) -> None:
    """Nothing plan/ decided is written again in a role: the roles read it from the manifest."""
    tree = core.render(example, tmp_path / "build")
    facts = yaml.safe_load((tree / "manifest.json").read_text())["hosts"]["mail"]["facts"]
    assert facts["slapd"] == {
        "config_ldif": layout.CONFIG_LDIF, "dit_ldif": layout.DIT_LDIF,
        "config_dir": layout.SLAPD_D, "db_dir": layout.SLAPD_DB_DIR,
        "run_dir": layout.SLAPD_RUN_DIR, "ldapi_uri": layout.LDAPI_URI,
        "placeholder": dit.PLACEHOLDER_PASSWORD,
        "reconcile": {"bases": [f"ou={o},dc=krasnoyarsk,dc=example,dc=org"
                                for o in ("people", "aliases", "domains", "groups")],
                      "accounts_base": "ou=people,dc=krasnoyarsk,dc=example,dc=org",
                      "accounts": "site",
                      "owned": [*dit.SITE_OWNED, "maildrop", "member", "mailLocalAddress"],
                      "initial": [dit.ORIGIN]},
        "replica": False,
        "first_passwords": [f"mail={a}@krasnoyarsk.example.org,ou=people,dc=krasnoyarsk,dc=example,dc=org"
                            for a in ("ivan", "olga", "probe")]}
    d = defaults("slapd")
    for key in facts["slapd"]:
        assert d[f"mailstack_slapd__{key}"] == f"{{{{ mailstack_slapd__host.facts.slapd.{key} }}}}"
    assert facts["other_services"] == [
        "mailstack-fetch@pop3-shop-provider.example-pop.provider.example.timer",
        "mailstack-fetch@imap-olga-provider.example-imap.provider.example.timer", "fail2ban",
        "nginx", "mailstack-clientconf"]
    assert defaults("base")["mailstack_base__services"] == \
        "{{ mailstack_base__host.facts.other_services }}"


def test_every_rendered_file_says_which_role_places_it_and_how_it_is_picked_up(
        tmp_path: Path) -> None:
    """The example has every kind of file: directory, Postfix, Dovecot, TLS, getmail6 units.
    The roles select their files by the manifest's ``role`` alone (no path patterns of their
    own), so each file has one placer, and a daemon role only places files of hosts with its
    role."""
    site = tmp_path / "site.yml"
    site.write_text(example_text())
    copy_secrets(tmp_path / "secrets")
    tree = core.render(site, tmp_path / "build")
    manifest = yaml.safe_load((tree / "manifest.json").read_text())
    assert manifest["format"] == 2
    files = manifest["hosts"]["mail"]["files"]
    placed = {p: (f["role"], f["pickup"]) for p, f in files.items()}
    assert placed["/etc/postfix/main.cf"] == ("postfix", "reload")
    assert placed["/etc/mailname"] == ("postfix", "reload")
    assert placed["/etc/dovecot/dovecot.conf"] == ("dovecot", "reload")
    assert placed["/etc/default/slapd"] == ("slapd", "restart")
    assert placed[layout.DIT_LDIF] == ("slapd", "ldap")
    assert placed[layout.ACL_EXPECTATIONS] == ("slapd", "none")
    assert placed[layout.CA_CERT] == ("base", "tls")
    assert placed["/etc/systemd/system/mailstack-fetch@.timer"] == ("base", "systemd")
    assert any(p.startswith("/etc/mailstack/fetch/") and v == ("base", "none")
               for p, v in placed.items())
    for name, host in manifest["hosts"].items():
        for path, entry in host["files"].items():
            assert entry["role"] in PLACERS and entry["pickup"] in PICKUPS, (name, path)
            if entry["role"] != "base":
                assert DAEMON_ROLES[entry["role"]] in host["roles"], (name, path)
    for role in ("base", *DAEMON_ROLES):
        assert f"selectattr('value.role', 'eq', '{role}')" in \
            defaults(role)[f"mailstack_{role}__files"]


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
@pytest.mark.parametrize("script", sorted(ROLES.glob("*/files/*.sh")), ids=lambda p: p.name)
def test_role_scripts_pass_shellcheck(script: Path) -> None:
    proc = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("module", sorted(resources.MODULES.glob("*.py")), ids=lambda p: p.stem)
def test_module_documentation_is_yaml_and_matches_the_argument_spec(module: Path) -> None:
    """A small stand-in for ansible-test sanity's validate-modules (ansible-test fetches its
    pip bootstrap from a host this project's machines cannot reach)."""
    import ast

    tree = ast.parse(module.read_text(encoding="utf-8"))
    texts = {n.targets[0].id: n.value.value for n in tree.body  # type: ignore[attr-defined]
             if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
             and n.targets[0].id in ("DOCUMENTATION", "RETURN")}
    doc = yaml.safe_load(texts["DOCUMENTATION"])
    assert doc["module"] == module.stem
    assert isinstance(yaml.safe_load(texts.get("RETURN", "{}")) or {}, dict)
    source = module.read_text(encoding="utf-8")
    spec = set(re.findall(r'^\s+"?(\w+)"?\s*[:=]\s*(?:dict\(|\{"type")', source, re.M))
    assert set(doc.get("options") or {}) <= spec, (set(doc["options"]), spec)
