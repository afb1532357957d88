"""mailstack.lab.plan_lab: names, addresses and the safety rule, without podman."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from mailstack.errors import InputError
from mailstack.lab import LabPlan, plan_lab, relay_name_ok, render_inventory
from mailstack.site.load import load_site
from tests.conftest import EXAMPLE, example_text

RELAYS_AT = example_text().splitlines().index("relays:") + 1  # line of `relays:`


def _site_with_relays(tmp_path: Path, relays_yaml: str):
    """The example with its `relays:` block replaced (default relay kept pointing at the first)."""
    text = example_text()
    head, _, rest = text.partition("relays:\n")
    tail = rest[rest.index("\naccounts:"):]
    first = relays_yaml.strip().splitlines()[0].strip().rstrip(":")
    head = head.replace("default: head-office", f"default: {first}")
    path = tmp_path / "site.yml"
    path.write_text(head + "relays:\n" + relays_yaml + tail, encoding="utf-8")
    return load_site(path), path


def test_example_plan_names_addresses_and_network() -> None:
    plan = plan_lab(load_site(EXAMPLE))
    assert plan.site == "krasnoyarsk"
    assert plan.network == "mailstack-krasnoyarsk"
    assert (plan.subnet, plan.gateway) == ("10.89.180.0/24", "10.89.180.254")
    rows = [(c.name, c.role, c.key, c.hostname, c.ip, c.aliases, c.pinned)
            for c in plan.containers]
    assert rows == [
        ("mailstack-krasnoyarsk-mail", "host", "mail", "mail.krasnoyarsk.example.org",
         "10.89.180.10", ("mail.krasnoyarsk.example.org",), ()),
        ("mailstack-krasnoyarsk-relay-head-office", "relay", "head-office",
         "head-office.relay.lab.test", "10.89.180.200", (), ("192.0.2.1",)),
        ("mailstack-krasnoyarsk-client", "client", "client", "client.lab.test",
         "10.89.180.100", (), ()),
    ]
    relay = plan.relay("head-office")
    assert (relay.port, relay.tls) == (25, "encrypt")
    assert relay.tls_names == ("head-office.relay.lab.test", "192.0.2.1")
    assert plan.client is plan.containers[-1]
    assert plan.host("mail").ip == "10.89.180.10"


def test_every_lab_address_is_private_and_in_the_subnet() -> None:
    plan = plan_lab(load_site(EXAMPLE))
    subnet = ipaddress.ip_network(plan.subnet)
    assert subnet.is_private and subnet.prefixlen == 24
    addresses = [plan.gateway, *(c.ip for c in plan.containers)]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    # The probe address is not loopback (Postfix's mynetworks is loopback only).
    assert not ipaddress.ip_address(plan.client.ip).is_loopback


def test_subnet_depends_on_site_name_and_skips_taken_ones(tmp_path: Path) -> None:
    site = load_site(EXAMPLE)
    assert plan_lab(site) == plan_lab(site)
    moved = plan_lab(site, taken=["10.89.180.0/24", "10.89.181.128/25"])
    assert (moved.subnet, moved.gateway) == ("10.89.182.0/24", "10.89.182.254")
    assert moved.host("mail").ip == "10.89.182.10"
    other = tmp_path / "site.yml"
    other.write_text(example_text().replace("site: krasnoyarsk", "site: omsk"))
    assert plan_lab(load_site(other)).subnet != "10.89.180.0/24"


def test_relay_named_by_reserved_name_gets_alias_not_pinned(tmp_path: Path) -> None:
    site, _ = _site_with_relays(tmp_path, (
        "  hq:\n    host: Relay.Example.NET\n    port: 587\n    tls: encrypt\n"
        "  backup:\n    host: smtp.backup.test\n"
    ))
    plan = plan_lab(site)
    hq, backup = plan.relays
    assert (hq.name, hq.hostname, hq.ip, hq.aliases, hq.pinned, hq.port) == (
        "mailstack-krasnoyarsk-relay-hq", "relay.example.net", "10.89.180.200",
        ("relay.example.net",), (), 587)
    assert (backup.ip, backup.aliases) == ("10.89.180.201", ("smtp.backup.test",))


def test_public_ip_relay_is_refused(tmp_path: Path) -> None:
    site, path = _site_with_relays(tmp_path, "  head-office:\n    host: 8.8.8.8\n")
    with pytest.raises(InputError) as info:
        plan_lab(site)
    assert str(info.value) == (
        f"{path}:{RELAYS_AT + 2}: relays.head-office.host: relay 'head-office' host 8.8.8.8 is "
        "not in a documentation range 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24 "
        "(RFC 5737): the lab only stands in for relays that cannot be a real server"
    )


def test_real_host_name_relay_is_refused(tmp_path: Path) -> None:
    site, path = _site_with_relays(tmp_path, "  moscow:\n    port: 587\n    host: smtp.yandex.ru\n")
    with pytest.raises(InputError) as info:
        plan_lab(site)
    assert str(info.value) == (
        f"{path}:{RELAYS_AT + 3}: relays.moscow.host: relay 'moscow' host smtp.yandex.ru is not "
        "a reserved example name .example, .test, .invalid, .localhost, example.com, "
        "example.net or example.org (RFC 2606): the lab only stands in for relays that cannot "
        "be a real server"
    )


def test_relays_in_two_slash_24s_are_refused(tmp_path: Path) -> None:
    site, path = _site_with_relays(tmp_path, (
        "  head-office:\n    host: 192.0.2.1\n"
        "  backup:\n    host: 198.51.100.7\n"
    ))
    with pytest.raises(InputError) as info:
        plan_lab(site)
    assert str(info.value) == (
        f"{path}:{RELAYS_AT + 4}: relays.backup.host: relay 'backup' host 198.51.100.7 is not in "
        "192.0.2.0/24, the /24 of relay 'head-office': the lab keeps all relays named by IP "
        "address in one /24"
    )


def test_every_refusal_is_listed_at_once(tmp_path: Path) -> None:
    site, path = _site_with_relays(tmp_path, (
        "  a:\n    host: 203.0.113.5\n"
        "  b:\n    host: 2001:db8::1\n"
        "  c:\n    host: mail.example.co\n"
        "  d:\n    host: 203.0.113.5\n"
    ))
    with pytest.raises(InputError) as info:
        plan_lab(site)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "relays.b.host", "relays.c.host", "relays.d.host"]
    assert lines[0].startswith(f"{path}:{RELAYS_AT + 4}: ")
    assert "host 2001:db8::1 is not in a documentation range" in lines[0]
    assert "host mail.example.co is not a reserved example name" in lines[1]
    assert "is also the host of relay 'a'" in lines[2]


@pytest.mark.parametrize(("name", "ok"), [
    ("relay.example", True), ("smtp.head.test", True), ("x.invalid", True),
    ("mx.localhost", True), ("example.com", True), ("mail.example.net.", True),
    ("a.b.example.org", True), ("test", False), ("example.co", False),
    ("notexample.com", False), ("smtp.yandex.ru", False), ("example.com.evil.org", False),
])
def test_reserved_names(name: str, ok: bool) -> None:
    assert relay_name_ok(name) is ok


def test_several_hosts(tmp_path: Path) -> None:
    text = example_text().replace(
        "    roles: [ldap, mta, imap]\n",
        "    roles: [mta, imap]\n  ldap:\n    hostname: ldap.krasnoyarsk.example.org\n"
        "    roles: [ldap]\n")
    path = tmp_path / "site.yml"
    path.write_text(text)
    plan = plan_lab(load_site(path))
    assert [(c.name, c.ip) for c in plan.containers] == [
        ("mailstack-krasnoyarsk-mail", "10.89.180.10"),
        ("mailstack-krasnoyarsk-ldap", "10.89.180.11"),
        ("mailstack-krasnoyarsk-relay-head-office", "10.89.180.200"),
        ("mailstack-krasnoyarsk-client", "10.89.180.100"),
    ]


def test_direct_delivery_is_refused(tmp_path: Path) -> None:
    """podman's DNS forwards unknown names outside even on --internal: no MX lookups."""
    text = example_text().replace("  default: head-office", "  default: direct")
    path = tmp_path / "site.yml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        plan_lab(load_site(path))
    assert str(err.value) == (f"{path}:19: relay.default: the lab cannot stand in for direct "
                              "delivery (it would look up MX records outside the lab): name a relay")


def test_plan_json_round_trip_and_inventory() -> None:
    plan = plan_lab(load_site(EXAMPLE))
    assert LabPlan.from_json(plan.to_json()) == plan
    key = Path("/srv/build/krasnoyarsk/lab/id_ed25519")
    inventory = yaml.safe_load(render_inventory(plan, key))
    assert inventory == {"all": {"hosts": {"mail": {
        "ansible_host": "10.89.180.10",
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3",
        "mailstack_lab_container": "mailstack-krasnoyarsk-mail",
    }}}}


def test_up_without_ssh_client_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailstack.errors import ToolError
    from mailstack.lab import run

    monkeypatch.setattr(run.shutil, "which", lambda name: None)
    with pytest.raises(ToolError, match=r"install the Debian package openssh-client"):
        run.up(EXAMPLE, build_dir="/nonexistent/never-written")


def test_up_refuses_an_unsafe_site_before_touching_podman(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailstack.lab import run

    def no_podman(*args: object, **kwargs: object) -> None:
        raise AssertionError("podman must not run for a refused site")

    monkeypatch.setattr(run.podman, "_podman", no_podman)
    monkeypatch.setattr(run.podman, "podman_available", no_podman)
    monkeypatch.setattr(run.subprocess, "run", no_podman)
    _, path = _site_with_relays(tmp_path, "  head-office:\n    host: smtp.yandex.ru\n")
    with pytest.raises(InputError, match=r"smtp\.yandex\.ru is not a reserved example name"):
        run.up(path, build_dir=tmp_path / "build")
    assert not (tmp_path / "build").exists()
