"""Live tests of mailstack.lab: one lab (a renamed copy of the example site) shared by the module.

Need root, podman and the image (`mailstack lab setup`) and an
SSH client; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mailstack import lab
from mailstack.container import Container, image_exists
from mailstack.errors import ToolError
from tests.conftest import example_text, live

pytestmark = live(ssh=True)

SITE = f"labtest-{uuid.uuid4().hex[:6]}"
RELAY = "head-office"
RELAY_IP = "192.0.2.1"  # the example's relay, pinned inside the lab


class Lab:
    def __init__(self, site_file: Path, build_dir: Path, state: lab.LabState, cold: float):
        self.site_file = site_file
        self.build_dir = build_dir
        self.state = state
        self.cold_seconds = cold

    def box(self, role_key: str) -> Container:
        if role_key == "client":
            return Container(self.state.client.name)
        if role_key == RELAY:
            return Container(self.state.relay(RELAY).name)
        return Container(self.state.host(role_key).name)

    def messages(self) -> list[str]:
        return lab.stand_ins(self.site_file, build_dir=self.build_dir).relay_messages(RELAY)


def _podman_lines(*args: str) -> list[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, check=True)
    return proc.stdout.split()


@pytest.fixture(scope="module")
def lab_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    site_file = root / "site.yml"
    site_file.write_text(example_text().replace("site: krasnoyarsk", f"site: {SITE}"))
    build_dir = root / "build"
    start = time.monotonic()
    try:
        state = lab.up(site_file, build_dir=build_dir)
        yield Lab(site_file, build_dir, state, time.monotonic() - start)
    finally:
        lab.down(site_file, build_dir=build_dir)


def test_up_writes_key_inventory_and_state(lab_up: Lab) -> None:
    st = lab_up.state
    assert st.network == f"mailstack-{SITE}"
    assert st.lab_dir == (lab_up.build_dir / SITE / "lab").absolute()
    assert stat.S_IMODE(st.key.stat().st_mode) == 0o600
    assert st.key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    inventory = yaml.safe_load(st.inventory.read_text())
    mail = inventory["all"]["hosts"]["mail"]
    assert mail["ansible_host"] == st.host("mail").ip
    assert mail["ansible_user"] == "root"
    assert mail["ansible_ssh_private_key_file"] == str(st.key)
    assert mail["ansible_python_interpreter"] == "/usr/bin/python3"
    recorded = json.loads((st.lab_dir / "lab.json").read_text())
    roles = {c["role"] for c in recorded["containers"]}
    assert roles == {c.role for c in st.containers} and roles >= {"host", "relay", "client"}
    assert lab.state(lab_up.site_file, build_dir=lab_up.build_dir) == st
    running = set(_podman_lines("ps", "--format", "{{.Names}}"))
    assert {c.name for c in st.containers} <= running
    assert st.relay_certs[RELAY].read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert st.relay_cas[RELAY].read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert st.relay_cas[RELAY].parent == lab_up.build_dir.absolute() / SITE / "lab-ca"


def test_ssh_reaches_every_site_host(lab_up: Lab) -> None:
    st = lab_up.state
    for host in st.hosts:
        proc = subprocess.run(lab.ssh_argv(st.key, host.ip, "hostname", "-f"),
                              capture_output=True, text=True, timeout=30)
        assert (proc.returncode, proc.stdout.strip()) == (0, host.hostname), proc.stderr


def test_network_is_internal(lab_up: Lab) -> None:
    info = json.loads(subprocess.run(["podman", "network", "inspect", lab_up.state.network],
                                     capture_output=True, text=True, check=True).stdout)[0]
    assert info["internal"] is True
    probe = ("import socket\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=5)\n"
             "except OSError as e:\n    print(e)\nelse:\n    print('connected')\n")
    for who in ("client", "mail", RELAY):
        out = lab_up.box(who).exec(["python3", "-c", probe], check=True).stdout
        assert "Network is unreachable" in out, (who, out)


def test_names_resolve_inside_the_lab(lab_up: Lab) -> None:
    mail = lab_up.state.host("mail")
    got = lab_up.box("client").exec(["getent", "hosts", mail.hostname], check=True).stdout
    assert got.split()[0] == mail.ip


def test_relay_keeps_mail_from_the_client_over_starttls(lab_up: Lab) -> None:
    before = len(lab_up.messages())
    sent = lab_up.box("client").exec(
        ["swaks", "--server", RELAY_IP, "--to", "someone@partner.example.net",
         "--from", "a@b.example", "--tls", "--header", "Subject: lab relay probe"],
        timeout=60,
    )
    assert sent.returncode == 0, sent.stdout[-2000:]
    deadline = time.monotonic() + 10
    while len(messages := lab_up.messages()) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(messages) == before + 1
    assert "Subject: lab relay probe" in messages[-1]
    assert "(using TLSv1" in messages[-1]  # smtpd_tls_received_header
    log = lab.stand_ins(lab_up.site_file, build_dir=lab_up.build_dir).relay_log(RELAY)
    assert "from=<a@b.example>" in log
    assert f"client=unknown[{lab_up.state.client.ip}]" in log


def test_site_host_reaches_the_relay_at_its_own_address(lab_up: Lab) -> None:
    # The relay's pinned address answers from the site host too: what its Postfix will use.
    greeting = lab_up.box("mail").exec(
        ["swaks", "--server", RELAY_IP, "--quit-after", "RCPT", "--to", "x@partner.example.net",
         "--from", "ivan@krasnoyarsk.example.org"], timeout=60)
    assert greeting.returncode == 0, greeting.stdout[-2000:]
    assert "ESMTP lab relay" in greeting.stdout


def test_up_again_keeps_the_running_lab(lab_up: Lab) -> None:
    ids = _podman_lines("ps", "--filter", f"network={lab_up.state.network}", "--format", "{{.ID}}")
    start = time.monotonic()
    again = lab.up(lab_up.site_file, build_dir=lab_up.build_dir)
    warm = time.monotonic() - start
    assert again == lab_up.state
    assert sorted(_podman_lines("ps", "--filter", f"network={again.network}",
                                "--format", "{{.ID}}")) == sorted(ids)
    assert len(lab_up.messages()) >= 1  # the relay kept its mail: not reconfigured from scratch
    assert warm < lab_up.cold_seconds


def test_snapshot_and_restore_round_trip(lab_up: Lab) -> None:
    mail = lab_up.box("mail")
    mail.put_file("/etc/lab-marker", "snapshotted\n")
    images = lab.snapshot(lab_up.site_file, "t1", build_dir=lab_up.build_dir)
    assert images == {"mail": f"localhost/mailstack-snap:{SITE}-mail-t1"}
    assert image_exists(images["mail"])
    mail.put_file("/etc/lab-marker", "changed\n")
    mail.put_file("/etc/lab-later", "x\n")

    lab.restore(lab_up.site_file, "t1", build_dir=lab_up.build_dir)
    assert mail.exec(["cat", "/etc/lab-marker"], check=True).stdout == "snapshotted\n"
    assert mail.exec(["test", "-e", "/etc/lab-later"]).returncode == 1
    assert mail.exec(["hostname", "-f"], check=True).stdout.strip() == "mail.krasnoyarsk.example.org"
    assert lab_up.messages() == []  # restore empties the relay's sink
    st = lab_up.state
    proc = subprocess.run(lab.ssh_argv(st.key, st.host("mail").ip, "cat", "/etc/lab-marker"),
                          capture_output=True, text=True, timeout=30)
    assert proc.stdout == "snapshotted\n", proc.stderr
    # The restored host still reaches the relay, and the client the restored host, at once.
    assert mail.exec(["swaks", "--server", RELAY_IP, "--quit-after", "EHLO"],
                     timeout=30).returncode == 0
    assert lab_up.box("client").exec(["swaks", "--server", st.host("mail").ip,
                                      "--quit-after", "EHLO"], timeout=30).returncode == 0
    with pytest.raises(ToolError, match="no snapshot 'nope'"):
        lab.restore(lab_up.site_file, "nope", build_dir=lab_up.build_dir)


def test_down_removes_everything(lab_up: Lab) -> None:
    st = lab_up.state
    removed = lab.down(lab_up.site_file, build_dir=lab_up.build_dir)
    assert sorted(removed) == sorted(c.name for c in st.containers)
    assert not set(_podman_lines("ps", "-a", "--format", "{{.Names}}")) & set(st.names)
    assert st.network not in _podman_lines("network", "ls", "--format", "{{.Name}}")
    assert not image_exists(f"localhost/mailstack-snap:{SITE}-mail-t1")
    assert not st.lab_dir.exists()
    # The stand-ins' CAs stay: secrets the lab wrote from them must still match next time.
    assert (lab_up.build_dir / SITE / "lab-ca" / "relay-head-office-ca.crt").is_file()
    assert lab.down(lab_up.site_file, build_dir=lab_up.build_dir) == []  # idempotent
    with pytest.raises(ToolError, match="no lab is up"):
        lab.state(lab_up.site_file, build_dir=lab_up.build_dir)
