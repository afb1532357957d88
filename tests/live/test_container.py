"""Live tests of mailstack.container against the real lab image (podman, systemd, daemons).

Need root, podman and the image (`mailstack lab setup`);
skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstack.container import (
    RUN_FLAGS,
    Container,
    commit,
    image_exists,
    remove_image,
)
from mailstack.errors import ToolError
from tests.conftest import live

pytestmark = live()


@pytest.fixture(scope="module")
def box() -> Iterator[Container]:
    """One throwaway container shared by the read-only checks of this module."""
    with Container.throwaway("mailstack-test") as container:
        yield container


def test_run_flags_are_the_measured_ones() -> None:
    assert "--systemd=always" in RUN_FLAGS
    assert RUN_FLAGS[RUN_FLAGS.index("--cap-add") + 1] == "SYS_PTRACE"
    if os.path.isdir("/sys/fs/cgroup/unified"):
        assert "/sys/fs/cgroup/unified:/sys/fs/cgroup/unified:rw" in RUN_FLAGS


def test_boots_systemd_cleanly(box: Container) -> None:
    pid1 = box.exec(["cat", "/proc/1/comm"], check=True).stdout.strip()
    assert pid1 == "systemd"
    assert box.system_state == "running", f"failed units: {box.failed_units()}"
    assert box.failed_units() == []
    assert box.exec(["hostname", "-f"], check=True).stdout.strip() == "mail.example.test"


def test_exec_returns_exit_codes_and_output(box: Container) -> None:
    result = box.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert box.exec(["true"]).returncode == 0
    assert box.exec(["cat"], input="hello\n").stdout == "hello\n"
    raw = box.exec(["od", "-An", "-tx1"], input=b"\x00\xff").stdout.split()
    assert raw == ["00", "ff"]
    with pytest.raises(ToolError, match="exited with 1"):
        box.exec(["false"], check=True)
    missing = box.exec(["/no/such/program"])
    assert missing.returncode in (126, 127)


def test_exec_timeout_raises(box: Container) -> None:
    with pytest.raises(ToolError, match="did not finish"):
        box.exec(["sleep", "10"], timeout=1)


def test_put_tree_keeps_modes_and_makes_root_owner(box: Container, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "srv/mailstack-test/private").mkdir(parents=True)
    (tree / "srv/mailstack-test/private").chmod(0o750)
    (tree / "srv/mailstack-test/main.cf").write_text("a = b\n")
    (tree / "srv/mailstack-test/main.cf").chmod(0o640)
    (tree / "srv/mailstack-test/run.sh").write_text("#!/bin/sh\necho ran\n")
    (tree / "srv/mailstack-test/run.sh").chmod(0o755)
    (tree / "srv/mailstack-test/private/key.pem").write_text("secret\n")
    (tree / "srv/mailstack-test/private/key.pem").chmod(0o600)
    (tree / "srv/mailstack-test/link.cf").symlink_to("main.cf")
    tree.chmod(0o700)  # like a mkdtemp() dir: must not become the mode of / in the container
    root_mode = box.exec(["stat", "-c", "%a", "/"], check=True).stdout.strip()
    box.put_tree(tree, "/")

    listing = box.exec(
        ["sh", "-c", "cd /srv/mailstack-test && stat -c '%n %a %U:%G %F' * private/key.pem"],
        check=True,
    ).stdout.splitlines()
    assert sorted(listing) == sorted(
        [
            "link.cf 777 root:root symbolic link",
            "main.cf 640 root:root regular file",
            "private 750 root:root directory",
            "private/key.pem 600 root:root regular file",
            "run.sh 755 root:root regular file",
        ]
    )
    assert box.exec(["/srv/mailstack-test/run.sh"], check=True).stdout == "ran\n"
    assert box.exec(["cat", "/srv/mailstack-test/link.cf"], check=True).stdout == "a = b\n"
    # Existing directories keep their own mode, whatever the local tree says.
    assert box.exec(["stat", "-c", "%a", "/srv"], check=True).stdout.strip() == "755"
    assert box.exec(["stat", "-c", "%a", "/"], check=True).stdout.strip() == root_mode


def test_put_tree_into_a_new_destination(box: Container, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x\n")
    box.put_tree(tmp_path, "/var/tmp/new/dir")
    assert box.exec(["cat", "/var/tmp/new/dir/x.txt"], check=True).stdout == "x\n"


def test_put_file(box: Container) -> None:
    box.put_file("/etc/mailstack-test/deep/secret", b"s3cret\n", mode=0o600)
    out = box.exec(["stat", "-c", "%a %U", "/etc/mailstack-test/deep/secret"], check=True)
    assert out.stdout.strip() == "600 root"
    assert box.exec(["cat", "/etc/mailstack-test/deep/secret"], check=True).stdout == "s3cret\n"
    box.put_file("/etc/mailstack-test/deep/secret", "changed\n", mode=0o640)
    out = box.exec(["stat", "-c", "%a", "/etc/mailstack-test/deep/secret"], check=True)
    assert out.stdout.strip() == "640"


def test_has_no_network(box: Container) -> None:
    assert box.exec(["ip", "-o", "route", "show"], check=True).stdout.strip() == ""
    assert box.exec(["ip", "-o", "-6", "route", "show", "default"], check=True).stdout == ""
    links = box.exec(["ip", "-o", "link", "show"], check=True).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]
    # 192.0.2.1 is TEST-NET-1 (documentation only); without a route the kernel refuses at once.
    probe = (
        "import socket\n"
        "s = socket.socket(); s.settimeout(3)\n"
        "try:\n"
        "    s.connect(('192.0.2.1', 25))\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, e.errno)\n"
        "else:\n"
        "    print('connected')\n"
    )
    out = box.exec(["python3", "-c", probe], check=True).stdout.strip()
    assert out.startswith("OSError 101"), out  # ENETUNREACH


def test_daemon_checkers_are_in_the_image(box: Container) -> None:
    tools = [
        "slapadd",
        "slaptest",
        "slapcat",
        "slapacl",
        "ldapsearch",
        "postfix",
        "postconf",
        "postmap",
        "doveconf",
        "doveadm",
        "swaks",
        "fetchmail",
        "openssl",
        "sshd",
    ]
    which = box.exec(["which", *tools])
    assert which.returncode == 0, which.stdout
    assert len(which.stdout.split()) == len(tools)
    assert "config file testing succeeded" not in box.exec(["slaptest", "-?"]).stdout
    assert "usage" in box.exec(["slaptest", "-?"]).stderr.lower()
    assert box.exec(["python3", "-c", "import ldap3"]).returncode == 0


def test_fresh_postfix_config_is_clean(box: Container) -> None:
    postconf = box.exec(["postconf", "-n"], check=True)
    assert postconf.stderr == ""
    # myhostname is not set: postfix takes the container's --hostname.
    assert not [line for line in postconf.stdout.splitlines() if line.startswith("myhostname")]
    check = box.exec(["postfix", "check"], check=True)
    assert (check.stdout, check.stderr) == ("", "")
    assert box.exec(["postconf", "-h", "myhostname"], check=True).stdout.strip() == (
        "mail.example.test"
    )
    doveconf = box.exec(["doveconf", "-n"], check=True)
    assert "Warning" not in doveconf.stderr


def test_slapd_package_left_no_database(box: Container) -> None:
    found = box.exec(
        ["sh", "-c", "grep -rl -e 'olcDatabase={1}mdb' -e nodomain /etc/ldap /var/lib/ldap"]
    )
    assert found.stdout == ""
    assert box.exec(["test", "-e", "/etc/ldap/slapd.d"]).returncode == 1
    assert box.exec(["test", "-e", "/var/lib/ldap/data.mdb"]).returncode == 1
    assert box.exec(["systemctl", "is-enabled", "slapd"]).stdout.strip() in ("enabled", "generated")


def test_daemons_run_with_defaults(box: Container) -> None:
    active = box.exec(["systemctl", "is-active", "postfix", "dovecot", "ssh"])
    assert active.stdout.split() == ["active", "active", "active"], active.stdout
    assert box.exec(["systemctl", "restart", "dovecot"], timeout=60).returncode == 0
    assert box.exec(["systemctl", "is-active", "dovecot"]).stdout.strip() == "active"
    banner = box.exec(["swaks", "--server", "127.0.0.1", "--quit-after", "EHLO"])
    assert "ESMTP Postfix" in banner.stdout, banner.stdout


def test_slapadd_builds_a_config(box: Container) -> None:
    ldif = (
        "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n\n"
        "dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n"
        "olcDatabase: {0}config\n"
    )
    box.put_file("/tmp/cfg.ldif", ldif.encode())
    box.exec(["mkdir", "-p", "/tmp/slapd.d"], check=True)
    box.exec(["slapadd", "-n0", "-F", "/tmp/slapd.d", "-l", "/tmp/cfg.ldif"], check=True)
    tested = box.exec(["slaptest", "-F", "/tmp/slapd.d"], check=True)
    assert "config file testing succeeded" in tested.stderr


def test_context_manager_removes_the_container() -> None:
    with Container.throwaway("mailstack-test-cm", hostname="cm.example.test") as c:
        name = c.name
        assert c.exists()
        assert c.exec(["hostname"], check=True).stdout.strip() == "cm.example.test"
    assert not Container(name).exists()

    with pytest.raises(RuntimeError), Container.throwaway("mailstack-test-cm") as c:
        name = c.name
        raise RuntimeError("boom")
    assert not Container(name).exists()
    Container(name).remove()  # removing a missing container is fine


def test_start_failure_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="starting container") as info:
        Container.start(
            "mailstack-test-noimage",
            hostname="x.example.test",
            image="localhost/mailstack-no-such-image:none",
        )
    assert "image not known" in str(info.value) or "no such image" in str(info.value).lower()
    assert not Container("mailstack-test-noimage").exists()
    with pytest.raises(ValueError):
        Container.start("x", hostname="x.example.test", ip="10.0.0.1")


def test_commit_snapshot_and_remove_image(box: Container) -> None:
    tag = "localhost/mailstack-test-snapshot:latest"
    box.put_file("/etc/mailstack-snapshot-marker", b"yes\n")
    image_id = commit(box.name, tag)
    try:
        assert image_exists(tag)
        assert len(image_id) >= 12
        with Container.throwaway("mailstack-test-snap", image=tag) as c:
            assert c.exec(["cat", "/etc/mailstack-snapshot-marker"], check=True).stdout == "yes\n"
            assert c.exec(["systemctl", "is-active", "postfix"]).stdout.strip() == "active"
    finally:
        remove_image(tag)
    assert not image_exists(tag)
    remove_image(tag)  # missing is fine
    with pytest.raises(ToolError):
        remove_image(tag, missing_ok=False)


def test_podman_leaves_no_test_containers() -> None:
    names = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    leftovers = [n for n in names if n.startswith("mailstack-test-") and "-cm-" in n]
    assert leftovers == []
