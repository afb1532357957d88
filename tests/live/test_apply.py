"""mailstack apply against a container of the project's image, over SSH like a real host.

One container on an internal podman network (the host reaches it at its address; it reaches
nothing), root's authorized_keys holding a key made here, and a small inventory. The tests run
in order on the same container: first apply, an apply with nothing to change, a grown site (an
account added, a password its user changed; in check mode first), an LDAP args file Dovecot
refuses (rolled back after the reload), and a rendered change Postfix refuses.

Needs root, podman and the image (`mailstack lab setup`) and
ansible-playbook; skipped with the reason otherwise. Stage timings are printed (pytest -s).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailstack import apply as applying
from mailstack.container import Container
from tests.conftest import EXAMPLE, copy_secrets, live

pytestmark = live(ssh=True, ansible=True)

HOSTNAME = "mail.krasnoyarsk.example.org"
IVAN = "ivan@krasnoyarsk.example.org"
IVAN_DN = "mail=ivan@krasnoyarsk.example.org,ou=people,dc=krasnoyarsk,dc=example,dc=org"
PETR_DN = "mail=petr@krasnoyarsk.example.org,ou=people,dc=krasnoyarsk,dc=example,dc=org"




@dataclass
class Target:
    box: Container
    ip: str
    inventory: Path
    root: Path
    timings: dict[str, float] = field(default_factory=dict)

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        return self.box.exec(["sh", "-c", script], timeout=120)

    def site(self, name: str, extra: str = "", accounts: str = "") -> Path:
        """A copy of the example (fixed secrets) with ``extra`` appended, in its own folder."""
        folder = self.root / name
        folder.mkdir()
        text = EXAMPLE.read_text(encoding="utf-8")
        if accounts:
            text = text.replace("\naliases:\n", accounts + "\naliases:\n", 1)
        (folder / "site.yml").write_text(text + extra, encoding="utf-8")
        copy_secrets(folder / "secrets")
        return folder / "site.yml"

    def apply(self, site: Path, stage: str, *, check_only: bool = False,
              diff: bool = False) -> applying.ApplyReport:
        lines: list[str] = []
        started = time.monotonic()
        try:
            return applying.apply(site, inventory=self.inventory, build_dir=self.root / "build",
                                  check_only=check_only, diff=diff, out=lines.append)
        finally:
            self.timings[stage] = time.monotonic() - started
            print(f"\n[{stage}: {self.timings[stage]:.1f} s]\n" + "\n".join(lines))


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("apply-live")
    suffix = uuid.uuid4().hex[:8]
    network = f"mailstack-apply-{suffix}"
    made = _podman("network", "create", "--internal", network)
    assert made.returncode == 0, made.stderr
    saved_env = {k: os.environ.get(k) for k in ("ANSIBLE_SSH_CONTROL_PATH_DIR",)}
    # SSH master connections of this module only: a later container may get the same address
    os.environ["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(root / "cp")
    timings: dict[str, float] = {}
    started = time.monotonic()
    box = None
    try:
        box = Container.start(f"mailstack-apply-{suffix}", hostname=HOSTNAME, network=network)
        key = root / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mailstack-test",
                        "-f", str(key)], check=True, capture_output=True)
        box.put_file("/root/.ssh/authorized_keys", key.with_suffix(".pub").read_text(), 0o600)
        box.exec(["chmod", "0700", "/root/.ssh"], check=True)
        ip = _podman("container", "inspect", "--format",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                     box.name).stdout.strip()
        assert ip, "the container has no address"
        ssh_args = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        inventory = root / "inventory.yml"
        inventory.write_text(json.dumps({"all": {"hosts": {"mail": {
            "ansible_host": ip, "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key), "ansible_ssh_common_args": ssh_args}}}}))
        deadline = time.monotonic() + 60
        while True:  # sshd makes its host keys at first start
            probe = subprocess.run(["ssh", *shlex.split(ssh_args), "-i", str(key),
                                    "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                                    f"root@{ip}", "true"], capture_output=True, text=True,
                                   check=False, timeout=30)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, f"no SSH to {ip}: {probe.stderr}"
            time.sleep(0.5)
        timings["container and SSH"] = time.monotonic() - started
        target = Target(box, ip, inventory, root, timings)
        yield target
    finally:
        if box is not None:
            box.remove()
        _podman("network", "rm", "--force", network)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        print("\nstage timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


def secret(site: Path, name: str) -> str:
    return (site.parent / "secrets" / name).read_text(encoding="utf-8").strip()


def auth_ok(target: Target, user: str, password: str) -> bool:
    target.box.put_file("/root/.mailstack-auth", password, 0o600)
    proc = target.sh(f'doveadm auth test {shlex.quote(user)} "$(cat /root/.mailstack-auth)"; '
                     "rc=$?; rm -f /root/.mailstack-auth; exit $rc")
    return proc.returncode == 0


def test_first_apply_brings_up_the_stack(target: Target) -> None:
    site = target.site("first")
    report = target.apply(site, "first apply")
    assert report.ok and report.changed > 0
    assert set(report.hosts) == {"mail"}
    active = target.sh("systemctl is-active slapd postfix dovecot")
    assert active.stdout.split() == ["active"] * 3, active.stdout + active.stderr
    assert auth_ok(target, IVAN, secret(site, f"accounts/{IVAN}"))
    assert not auth_ok(target, IVAN, "wrong-password")
    placed = target.sh("stat -c '%a %U %G' /etc/postfix/ldap/virtual_alias_maps.cf "
                       "/etc/mailstack/tls/mail.key /etc/ldap/tls/mail.key; "
                       "stat -c '%a %u %g' /var/vmail")
    assert placed.stdout.split("\n")[:4] == ["640 root postfix", "600 root root",
                                             "640 root openldap", "750 5000 5000"]


def test_second_apply_changes_nothing(target: Target) -> None:
    report = target.apply(target.root / "first" / "site.yml", "re-apply")
    assert report.ok
    assert {name: (h.changed, h.changes) for name, h in report.hosts.items()} == {"mail": (0, [])}


def test_new_account_gets_its_password_and_a_users_own_password_stays(target: Target) -> None:
    site = target.site("grown", accounts="  - mail: petr@krasnoyarsk.example.org\n"
                                         "    name: Petr Ivanov\n")
    (site.parent / "secrets" / "accounts" / "petr@krasnoyarsk.example.org").write_text(
        "petr-initial-password\n")
    (site.parent / "secrets" / "accounts" / "petr@krasnoyarsk.example.org").chmod(0o600)
    own = "ivan-chose-this-one"
    target.box.put_file("/root/.mailstack-pw", secret(site, f"accounts/{IVAN}"), 0o600)
    changed = target.sh(f"ldappasswd -x -H ldapi:/// -D {shlex.quote(IVAN_DN)} "
                        f"-y /root/.mailstack-pw -s {own}; rc=$?; rm -f /root/.mailstack-pw; "
                        "exit $rc")
    assert changed.returncode == 0, changed.stderr
    dry = target.apply(site, "grown site, check mode", check_only=True, diff=True)  # plan
    assert f"added {PETR_DN}" in "\n".join(dry.hosts["mail"].changes)
    diffs = dict(dry.hosts["mail"].diffs)
    entries = "\n".join(text for what, text in diffs.items() if "Bring the directory" in what)
    assert f"dn: {PETR_DN}\nchangetype: add" in entries
    assert diffs["/var/lib/mailstack/ldap/dit.ldif"] == "(secret: diff hidden)"
    assert "unusable-until-set" not in "\n".join(diffs.values())  # userPassword: (secret)
    assert target.sh(f"ldapsearch -LLL -Q -Y EXTERNAL -H ldapi:/// -b {shlex.quote(PETR_DN)} "
                     "-s base dn").returncode == 32, "check mode must not add the entry"
    report = target.apply(site, "grown site")
    changes = "\n".join(report.hosts["mail"].changes)
    assert f"added {PETR_DN}" in changes
    assert f"set the password of {PETR_DN}\n" in changes + "\n"  # and of no one else
    assert auth_ok(target, IVAN, own)
    assert auth_ok(target, "petr@krasnoyarsk.example.org", "petr-initial-password")
    again = target.apply(site, "grown site again")
    assert again.hosts["mail"].changed == 0, again.hosts["mail"].changes


def test_ldap_files_dovecot_refuses_are_rolled_back(target: Target) -> None:
    """doveconf never reads the LDAP args files: the reloaded Dovecot is asked, then rolled back."""
    build = target.root / "bad-dovecot" / "krasnoyarsk"
    shutil.copytree(target.root / "build" / "krasnoyarsk", build, symlinks=True)
    userdb = "/etc/dovecot/dovecot-ldap-userdb.conf.ext"
    with (build / "mail" / userdb.lstrip("/")).open("a") as fh:
        fh.write("bogus_setting = 1\n")
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["hosts"]["mail"]["files"][userdb]["sha256"] = hashlib.sha256(
        (build / "mail" / userdb.lstrip("/")).read_bytes()).hexdigest()
    (build / "manifest.json").write_text(json.dumps(manifest))
    started = time.monotonic()
    lines: list[str] = []
    with pytest.raises(applying.ApplyFailed) as caught:
        applying.run_playbook(target.inventory, build, {}, out=lines.append)
    target.timings["refused Dovecot LDAP file"] = time.monotonic() - started
    print("\n".join(lines))
    message = str(caught.value)
    assert f"{userdb} changed" in message
    assert "Unknown setting: bogus_setting" in message
    assert "the previous configuration was put back and Dovecot reloaded with it" in message
    assert "bogus_setting" not in target.sh(f"cat {userdb}").stdout
    assert target.sh("systemctl is-active dovecot").stdout.strip() == "active"
    assert auth_ok(target, IVAN, "ivan-chose-this-one")


def test_a_configuration_postfix_refuses_leaves_postfix_running_as_before(
        target: Target) -> None:
    before = target.sh("postconf -h smtpd_tls_security_level").stdout.strip()
    site = target.site("bogus", extra="\npostfix:\n  main:\n    smtpd_tls_security_level: bogus\n",
                       accounts="  - mail: petr@krasnoyarsk.example.org\n"
                                "    name: Petr Ivanov\n")
    (site.parent / "secrets" / "accounts" / "petr@krasnoyarsk.example.org").write_text(
        "petr-initial-password\n")
    (site.parent / "secrets" / "accounts" / "petr@krasnoyarsk.example.org").chmod(0o600)
    with pytest.raises(applying.ApplyFailed) as caught:
        target.apply(site, "refused change")
    message = str(caught.value)
    assert message.startswith("apply of krasnoyarsk failed on mail:")
    assert "/etc/postfix/main.cf" in message
    assert 'Invalid TLS level "bogus"' in message
    assert "the running Postfix keeps its previous configuration" in message
    assert target.sh("postconf -h smtpd_tls_security_level").stdout.strip() == before == "may"
    assert target.sh("systemctl is-active postfix").stdout.strip() == "active"
    assert target.sh("ls -d /etc/postfix.mailstack-stage*").returncode != 0
