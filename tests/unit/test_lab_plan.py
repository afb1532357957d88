"""mailstack.lab.plan_lab: names, addresses and the safety rule, without podman."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from mailstack.errors import InputError
from mailstack.lab import LabPlan, plan_lab, relay_name_ok, render_inventory
from mailstack.site.load import load_site
from mailstack.site.model import Site
from tests.conftest import EXAMPLE, example_text

# Issue 5: relays chosen by sender and recipient, TLS on every hop, remote mailboxes.
ISSUE5_RELAYS = """\
relay: {default: head-office}
relays:
  head-office: {host: 192.0.2.1, port: 25, tls: verify, tls_name: relay.head-office.example,
                ca_secret: lab/head-office-ca}
  provider:
    host: smtp.provider.example
    port: 465
    tls: wrapper
    ca_secret: lab/provider-ca
    auth: {user: shop@provider.example, password_secret: provider/shop}
routes:
  recipients: {"@head-office.example": head-office}
  senders: {shop@provider.example: provider}
"""
ISSUE5_FETCH = """\
fetch:
  - {account: ivan@krasnoyarsk.example.org, protocol: pop3, host: pop.provider.example,
     user: shop@provider.example, password_secret: provider/shop, keep: true, interval: 5m,
     ca_secret: lab/provider-ca}
  - {account: olga@krasnoyarsk.example.org, protocol: imap, host: imap.provider.example,
     user: olga@provider.example, password_secret: provider/olga, keep: false,
     folders: [INBOX], interval: 5m, ca_secret: lab/provider-ca}
"""
# The example as it was before issue 5: one relay, no login, no remote mailboxes.
HEAD_OFFICE_ONLY = """\
relay:
  default: head-office
relays:
  head-office:
    host: 192.0.2.1
    port: 25
    tls: encrypt
"""


def site_text(site: str = "krasnoyarsk", *, relays: str = ISSUE5_RELAYS,
              fetch: str = ISSUE5_FETCH, send_as: bool = True) -> str:
    """The example with ``relays`` in place of everything from its ``relay:`` line up to
    ``accounts:`` (relays, routes), ``fetch`` in place of its ``fetch:`` section, and Ivan
    allowed to send as shop@provider.example (``send_as``): the same text whatever the
    example already has of these."""
    text = example_text().replace("site: krasnoyarsk", f"site: {site}")
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("relay:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("accounts:"))
    lines[start:end] = [relays, "\n"]
    stop = next((i for i, line in enumerate(lines) if line.startswith("fetch:")), len(lines))
    while stop < len(lines) and lines[stop].startswith(("fetch:", " ", "-")):
        del lines[stop]
    text = "".join(lines).replace("    send_as: [shop@provider.example]\n", "")
    ivan = "    name: Ivan Petrov\n"
    if send_as:
        text = text.replace(ivan, ivan + "    send_as: [shop@provider.example]\n", 1)
    return text.rstrip("\n") + "\n" + ("\n" + fetch if fetch else "")


def _relays_block(relays_yaml: str, default: str | None = None) -> str:
    first = default or relays_yaml.strip().splitlines()[0].strip().rstrip(":")
    return f"relay:\n  default: {first}\nrelays:\n{relays_yaml}"


RELAYS_AT = site_text(relays=_relays_block("  x:\n    host: a.example\n"), fetch="",
                      send_as=False).splitlines().index("relays:") + 1  # line of `relays:`


def _write(tmp_path: Path, text: str) -> tuple[Site, Path]:
    path = tmp_path / "site.yml"
    path.write_text(text, encoding="utf-8")
    return load_site(path), path


def _site_with_relays(tmp_path: Path, relays_yaml: str, fetch: str = ""):
    """The example with only these relays (the default relay is the first) and ``fetch``."""
    return _write(tmp_path, site_text(relays=_relays_block(relays_yaml), fetch=fetch,
                                      send_as=False))


def test_example_plan_names_addresses_and_network(tmp_path: Path) -> None:
    plan = plan_lab(_write(tmp_path, site_text(relays=HEAD_OFFICE_ONLY, fetch="",
                                               send_as=False))[0])
    assert plan.site == "krasnoyarsk"
    assert plan.network == "mailstack-krasnoyarsk"
    assert (plan.subnet, plan.gateway) == ("10.89.180.0/24", "10.89.180.254")
    rows = [(c.name, c.role, c.key, c.hostname, c.ip, c.aliases, c.pinned)
            for c in plan.containers]
    assert rows == [
        ("mailstack-krasnoyarsk-mail", "host", "mail", "mail.krasnoyarsk.example.org",
         "10.89.180.10", ("mail.krasnoyarsk.example.org",
                                             "autoconfig.krasnoyarsk.example.org",
                                             "autodiscover.krasnoyarsk.example.org"), ()),
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
    text = site_text().replace(
        "    roles: [ldap, mta, imap]\n",
        "    roles: [mta, imap]\n  ldap:\n    hostname: ldap.krasnoyarsk.example.org\n"
        "    roles: [ldap]\n")
    plan = plan_lab(_write(tmp_path, text)[0])
    assert [(c.name, c.ip) for c in plan.containers] == [
        ("mailstack-krasnoyarsk-mail", "10.89.180.10"),
        ("mailstack-krasnoyarsk-ldap", "10.89.180.11"),
        ("mailstack-krasnoyarsk-relay-head-office", "10.89.180.200"),
        ("mailstack-krasnoyarsk-provider", "10.89.180.150"),
        ("mailstack-krasnoyarsk-client", "10.89.180.100"),
    ]


def test_direct_delivery_is_refused(tmp_path: Path) -> None:
    """podman's DNS forwards unknown names outside even on --internal: no MX lookups."""
    site, path = _write(tmp_path, site_text(relays=_relays_block(
        "  head-office:\n    host: 192.0.2.1\n", default="direct"), fetch="", send_as=False))
    line = RELAYS_AT - 1  # `  default: direct` is the line before `relays:`
    with pytest.raises(InputError) as err:
        plan_lab(site)
    assert str(err.value) == (f"{path}:{line}: relay.default: the lab cannot stand in for direct "
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

    from mailstack import container

    monkeypatch.setattr(container, "_podman", no_podman)
    monkeypatch.setattr(container, "podman_available", no_podman)
    monkeypatch.setattr(run.subprocess, "run", no_podman)
    _, path = _site_with_relays(tmp_path, "  head-office:\n    host: smtp.yandex.ru\n")
    with pytest.raises(InputError, match=r"smtp\.yandex\.ru is not a reserved example name"):
        run.up(path, build_dir=tmp_path / "build")
    assert not (tmp_path / "build").exists()


# -- issue 5: the provider, the lab's outside secrets, the fixtures' files ----------------

def _issue5(tmp_path: Path, **kw: object) -> tuple[Site, Path]:
    return _write(tmp_path, site_text(**kw))  # type: ignore[arg-type]


def test_issue5_plan_has_one_provider_for_the_login_relay_and_every_fetch_host(
        tmp_path: Path) -> None:
    from mailstack.lab import fixture_id

    site, _ = _issue5(tmp_path)
    plan = plan_lab(site)
    assert [(c.name, c.role, c.ip) for c in plan.containers] == [
        ("mailstack-krasnoyarsk-mail", "host", "10.89.180.10"),
        ("mailstack-krasnoyarsk-relay-head-office", "relay", "10.89.180.200"),
        ("mailstack-krasnoyarsk-provider", "provider", "10.89.180.150"),
        ("mailstack-krasnoyarsk-client", "client", "10.89.180.100"),
    ]
    head = plan.relay("head-office")
    assert (head.tls, head.port, head.pinned, head.aliases) == ("verify", 25, ("192.0.2.1",), ())
    assert head.tls_names == ("relay.head-office.example", "head-office.relay.lab.test",
                              "192.0.2.1")
    assert (head.stands_for, head.listens) == (("head-office",), ("smtp:25",))
    provider = plan.provider
    assert provider is not None and plan.relay("provider") is provider
    assert provider.hostname == "smtp.provider.example"
    assert provider.aliases == ("smtp.provider.example", "pop.provider.example",
                                "imap.provider.example")
    assert provider.tls_names == provider.aliases
    assert provider.pinned == ()
    assert provider.stands_for == ("provider",)
    assert provider.listens == ("smtps:465", "smtp:587", "imaps:993", "pop3s:995")
    assert provider.ports("imaps", "pop3s") == (993, 995)
    assert provider.mailboxes == ("shop@provider.example", "olga@provider.example")
    assert plan.stand_ins == (head, provider)
    assert [fixture_id(c) for c in plan.stand_ins] == ["relay-head-office", "provider"]
    assert LabPlan.from_json(plan.to_json()) == plan
    with pytest.raises(KeyError):
        plan.relay("nope")


def test_no_provider_without_logins_or_remote_mailboxes(tmp_path: Path) -> None:
    site, _ = _write(tmp_path, site_text(relays=HEAD_OFFICE_ONLY, fetch="", send_as=False))
    plan = plan_lab(site)
    assert plan.provider is None
    assert [c.role for c in plan.stand_ins] == ["relay"]


def test_provider_takes_the_ports_and_addresses_the_site_names(tmp_path: Path) -> None:
    site, _ = _site_with_relays(tmp_path, (
        "  hq:\n    host: 192.0.2.1\n"
        "  isp:\n    host: 192.0.2.9\n    port: 2525\n    tls: encrypt\n"
        "    auth: {user: shop, password_secret: isp/shop}\n"
        "  isp-465:\n    host: 192.0.2.9\n    port: 465\n    tls: verify\n"
        "    auth: {user: shop, password_secret: isp/shop}\n"
        "  plain:\n    host: mail.isp.example\n    port: 25\n"
    ), fetch=(
        "fetch:\n  - {account: ivan@krasnoyarsk.example.org, protocol: imap, port: 1993, "
        "host: mail.isp.example, user: ivan@isp.example, password_secret: isp/ivan}\n"
    ))
    plan = plan_lab(site)
    provider = plan.provider
    assert provider is not None
    # A relay without auth at a fetch host is the provider too; addresses are pinned there.
    assert provider.stands_for == ("isp", "isp-465", "plain")
    assert [r.key for r in plan.relays] == ["hq"]
    assert (provider.hostname, provider.aliases, provider.pinned) == (
        "mail.isp.example", ("mail.isp.example",), ("192.0.2.9",))
    # 465 with STARTTLS because the site says so; 2525 and 25 from the relays, 1993 the fetch.
    assert provider.listens == ("smtp:25", "smtp:465", "smtp:587", "imaps:1993",
                                "smtp:2525")
    assert provider.mailboxes == ("shop", "ivan@isp.example")


def test_provider_port_wanted_both_ways_is_refused(tmp_path: Path) -> None:
    site, path = _site_with_relays(tmp_path, (
        "  a:\n    host: smtp.isp.example\n    port: 465\n    tls: wrapper\n"
        "    auth: {user: a, password_secret: isp/a}\n"
        "  b:\n    host: smtp.isp.example\n    port: 465\n    tls: verify\n"
        "    auth: {user: b, password_secret: isp/b}\n"
    ))
    with pytest.raises(InputError) as info:
        plan_lab(site)
    assert str(info.value) == (
        f"{path}:{RELAYS_AT + 8}: relays.b.port: relay 'b' wants STARTTLS on port 465 of the "
        "lab's provider, where relay 'a' wants TLS from the first byte")


def test_fetch_from_a_real_server_is_refused(tmp_path: Path) -> None:
    site, path = _site_with_relays(tmp_path, "  hq:\n    host: 192.0.2.1\n", fetch=(
        "fetch:\n  - {account: ivan@krasnoyarsk.example.org, protocol: pop3, "
        "host: pop.yandex.ru, user: ivan, password_secret: y/ivan}\n"))
    with pytest.raises(InputError) as info:
        plan_lab(site)
    assert str(info.value).endswith(
        "fetch[0].host: fetch[0] host pop.yandex.ru is not a reserved example name .example, "
        ".test, .invalid, .localhost, example.com, example.net or example.org (RFC 2606): the "
        "lab only stands in for relays that cannot be a real server")
    assert str(info.value).startswith(f"{path}:")


def test_outside_secrets_of_issue5(tmp_path: Path) -> None:
    from mailstack.lab import outside_secrets

    site, _ = _issue5(tmp_path)
    got = [(s.name, s.kind, s.fixtures, s.users) for s in outside_secrets(site, plan_lab(site))]
    assert got == [
        ("lab/head-office-ca", "ca", ("relay-head-office",), ()),
        ("provider/shop", "password", (), ("shop@provider.example",)),
        ("lab/provider-ca", "ca", ("provider",), ()),
        ("provider/olga", "password", (), ("olga@provider.example",)),
    ]
    # Exactly the external secrets `mailstack secrets` cannot make.
    from mailstack import secrets

    external = {r.name for r in secrets.required(site) if r.kind == "external"}
    assert {name for name, *_ in got} == external


def test_one_name_as_ca_and_as_password_is_refused(tmp_path: Path) -> None:
    from mailstack.lab import outside_secrets

    site, _ = _issue5(tmp_path, fetch=ISSUE5_FETCH.replace(
        "password_secret: provider/olga", "password_secret: lab/provider-ca"))
    with pytest.raises(InputError, match=r"fetch\[1\]\.password_secret: secret 'lab/provider-ca' "
                                         r"is asked for as a password here and as a ca at "
                                         r"relays\.provider\.ca_secret"):
        outside_secrets(site, plan_lab(site))


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_ensure_outside_secrets_fills_in_what_is_missing_once(tmp_path: Path) -> None:
    from cryptography import x509

    from mailstack import lab
    from mailstack.lab import tls

    _, path = _issue5(tmp_path)
    build = tmp_path / "build"
    made = lab.ensure_outside_secrets(path, build)
    assert made == ["lab/head-office-ca", "lab/provider-ca", "provider/shop", "provider/olga"]
    secrets = tmp_path / "secrets"
    for name in made:
        assert _mode(secrets / name) == 0o600
    ca_dir = build / "krasnoyarsk" / "lab-ca"
    assert (secrets / "lab/head-office-ca").read_text() == \
        (ca_dir / "relay-head-office-ca.crt").read_text()
    assert (secrets / "lab/provider-ca").read_text() == (ca_dir / "provider-ca.crt").read_text()
    assert _mode(ca_dir / "provider-ca.key") == 0o600
    ca = x509.load_pem_x509_certificate((ca_dir / "provider-ca.crt").read_bytes())
    assert ca.subject.rfc4514_string() == "CN=mailstack lab krasnoyarsk: CA of the provider"
    shop = (secrets / "provider/shop").read_text()
    assert len(shop.strip()) == 24 and shop.endswith("\n")
    # Again: nothing new, nothing overwritten, the same CAs.
    before = {p: p.read_bytes() for p in [*secrets.rglob("*"), *ca_dir.rglob("*")] if p.is_file()}
    assert lab.ensure_outside_secrets(path, build) == []
    assert {p: p.read_bytes() for p in before} == before
    report = lab.prepare_outside_secrets(path, build_dir=build)
    assert report.warnings == ()
    assert report.passwords == {"shop@provider.example": shop.strip(),
                                "olga@provider.example": (secrets / "provider/olga").read_text()
                                .strip()}
    assert tls.certificates_in(report.cas["provider"].cert)[0] == ca


def test_existing_outside_secrets_are_used_or_reported(tmp_path: Path) -> None:
    from mailstack import lab
    from mailstack.lab import tls

    _, path = _issue5(tmp_path, fetch=ISSUE5_FETCH.replace(
        "user: shop@provider.example, password_secret: provider/shop",
        "user: shop@provider.example, password_secret: provider/shop-pop"))
    secrets = tmp_path / "secrets"
    (secrets / "provider").mkdir(parents=True)
    (secrets / "provider/shop").write_text("their-own:password\n")
    (secrets / "provider/shop").chmod(0o600)
    (secrets / "lab").mkdir()
    foreign = tls.new_ca("the real head office CA").cert
    (secrets / "lab/head-office-ca").write_text(foreign)
    (secrets / "lab/head-office-ca").chmod(0o600)
    report = lab.prepare_outside_secrets(path, build_dir=tmp_path / "build")
    # The login's other secret gets the password that exists; the provider uses it too.
    assert report.created == ("lab/provider-ca", "provider/shop-pop", "provider/olga")
    assert (secrets / "provider/shop-pop").read_text() == "their-own:password\n"
    assert report.passwords["shop@provider.example"] == "their-own:password"
    assert (secrets / "lab/head-office-ca").read_text() == foreign  # never overwritten
    ca_file = tmp_path / "build/krasnoyarsk/lab-ca/relay-head-office-ca.crt"
    assert report.warnings == (
        f"{secrets / 'lab/head-office-ca'}: secret 'lab/head-office-ca' does not hold the CA of "
        f"the lab's relay head-office ({ca_file}): its certificate will not verify, so mail to "
        "it will not go out (tls: verify/wrapper) or collection will fail; remove the file and "
        "run `mailstack lab up` again to let the lab write it",)


def test_one_ca_secret_for_two_stand_ins_is_a_bundle(tmp_path: Path) -> None:
    from mailstack import lab
    from mailstack.lab import tls

    _, path = _issue5(tmp_path, relays=ISSUE5_RELAYS.replace("lab/head-office-ca", "lab/cas")
                      .replace("lab/provider-ca", "lab/cas"), fetch="")
    assert lab.ensure_outside_secrets(path, tmp_path / "build") == ["lab/cas", "provider/shop"]
    held = tls.certificates_in((tmp_path / "secrets/lab/cas").read_text())
    assert [c.subject.rfc4514_string() for c in held] == [
        "CN=mailstack lab krasnoyarsk: CA of relay head-office",
        "CN=mailstack lab krasnoyarsk: CA of the provider"]


def test_server_certificate_is_kept_until_its_names_change(tmp_path: Path) -> None:
    from cryptography import x509

    from mailstack.lab import tls

    ca = tls.ensure_ca(tmp_path, "relay-x", "lab CA")
    names = ("relay.head-office.example", "head-office.relay.lab.test", "192.0.2.1")
    first = tls.ensure_server_cert(tmp_path, "relay-x", ca, names)
    assert tls.ensure_server_cert(tmp_path, "relay-x", ca, names) == first
    cert = x509.load_pem_x509_certificate(first.cert.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(names[:2])
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    assert tls.signed_by(cert, x509.load_pem_x509_certificate(ca.cert.encode()))
    other = tls.ensure_server_cert(tmp_path, "relay-x", ca, names[:2])
    assert other != first
    stranger = tls.new_ca("nobody")
    assert not tls.signed_by(cert, x509.load_pem_x509_certificate(stranger.cert.encode()))


def test_provider_fixture_files(tmp_path: Path) -> None:
    import base64

    from mailstack.lab import provider as fx
    from mailstack.lab import relay as relay_fx

    site, _ = _issue5(tmp_path)
    plan = plan_lab(site)
    provider = plan.provider
    assert provider is not None
    conf = fx.render_dovecot_conf(provider)
    assert "@" not in conf.replace("%u", "").split("service imap-login", 1)[1].split(
        "service auth", 1)[0]
    assert "  inet_listener imaps_993 {\n    port = 993\n    ssl = yes\n  }" in conf
    assert "  inet_listener pop3s_995 {\n    port = 995\n    ssl = yes\n  }" in conf
    assert "myhostname = smtp.provider.example\n" in fx.render_main_cf(provider)
    users = fx.users_file({"shop@provider.example": "a:b"})
    assert users == ("shop@provider.example:{PLAIN.b64}"
                     f"{base64.b64encode(b'a:b').decode()}::::::\n")
    assert fx.sender_logins(provider).splitlines()[1:] == [
        "shop@provider.example shop@provider.example",
        "olga@provider.example olga@provider.example"]
    with pytest.raises(InputError, match="cannot be a login"):
        fx.users_file({"../etc": "x"})
    assert relay_fx.smtpd_listeners(provider, starttls="smtp-encrypt") == {
        465: "smtps", 587: "smtp-encrypt"}
    relay_cf = relay_fx.render_main_cf(plan, plan.relay("head-office"))
    assert "smtpd_sasl_auth_enable = yes\n" in relay_cf
    assert f"mynetworks = 127.0.0.0/8 {plan.subnet}\n" in relay_cf
    assert "mynetworks = 127.0.0.0/8\n" in fx.render_main_cf(provider)


def test_auth_usernames_from_postfix_log() -> None:
    from mailstack.lab import auth_usernames

    log = (
        "Nov 22 06:13:18 smtp postfix/smtpd[976]: 1FD871945B5: client=unknown[10.89.250.100], "
        "sasl_method=PLAIN, sasl_username=shop@provider.example\n"
        "Nov 22 06:13:21 smtp postfix/smtpd[984]: warning: unknown[10.89.250.100]: SASL PLAIN "
        "authentication failed: (reason unavailable), sasl_username=shop@provider.example\n"
        "Nov 22 06:13:36 smtp postfix/smtpd[984]: warning: unknown[10.89.250.100]: SASL LOGIN "
        "authentication failed: (reason unavailable), sasl_username=olga@provider.example\n"
        "Nov 22 06:13:37 smtp postfix/smtpd[984]: disconnect from unknown[10.89.250.100] "
        "ehlo=2 starttls=1 auth=0/1 quit=1 commands=4/5\n"
    )
    assert auth_usernames(log) == ["shop@provider.example", "olga@provider.example"]
    assert auth_usernames("") == []
