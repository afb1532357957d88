"""Plan decisions as data: merges, lookups, indices, homes, hashes, modes."""

from __future__ import annotations

import base64
import hashlib

from mailstack import core
from mailstack import secrets as secrets_mod
from mailstack.ldap import filter as lf
from mailstack.plan import dit, dovecot, layout, postfix, slapd
from mailstack.site.load import load_site


def test_merge_later_layers_win_and_none_removes() -> None:
    merged = postfix.merge({"a": "1", "b": "2", "c": "3"}, {"b": "20", "c": None, "d": "4"})
    assert merged == {"a": "1", "b": "20", "d": "4"}
    assert list(merged) == ["a", "b", "d"]


def test_merge_services_replaces_by_name_and_type() -> None:
    base = postfix.default_services()
    custom = postfix.Service("smtp", "inet", "n", "-", "n", "-", "-", "smtpd",
                             (("smtpd_tls_security_level", "encrypt"),))
    merged = postfix.merge_services(base, [custom])
    assert [s.key for s in merged] == [s.key for s in base]
    assert merged[0] == custom
    assert ("smtp", "unix") in [s.key for s in merged]


def test_site_main_cf_overrides_are_merged_last(write_site) -> None:
    from tests.unit.test_site_checks import GOOD

    site = load_site(write_site(GOOD + "postfix:\n  main: {message_size_limit: '104857600'}\n"))
    main = postfix.main_cf(site, "mail")
    assert main["message_size_limit"] == "104857600"
    assert main["mynetworks"] == "127.0.0.0/8 [::1]/128"
    assert main["virtual_alias_domains"] == ""
    assert main["relayhost"] == ""
    assert main["default_transport"] == "relay-head-office:[192.0.2.1]:25"
    assert main["smtpd_sasl_auth_enable"] == "no"


def test_lookups_filters_and_indices(example) -> None:
    site = load_site(example)
    by_name = {lk.name: lk for lk in dit.lookups(site)}
    assert lf.render(by_name["passdb"].filter) == "(&(objectClass=CourierMailAccount)(mail=%u))"
    assert lf.render(by_name["virtual_alias_maps"].filter) == \
        "(&(objectClass=CourierMailAlias)(mail=%s)(!(mailstackLocked=TRUE)))"
    assert dit.index_attributes(site) == ("mail", "mailstackDisabledService", "mailstackLocked",
                                          "objectClass")
    assert {lk.service for lk in by_name.values()} == {"dovecot", "postfix"}


def test_one_home_for_imap_pop3_and_lmtp(example) -> None:
    """The DIT's homeDirectory is what Dovecot's userdb returns for every service."""
    site = load_site(example)
    settings = dovecot.ldap_settings(site, "userdb", layout.LDAPI_URI, "pw")
    assert settings["user_attrs"].split(",")[0] == "homeDirectory=home"
    data = dovecot.config(site, "mail")
    assert dict(data["settings"])["mail_location"] == "maildir:~/Maildir"
    ivan = next(e for e in dit.entries(site) if "ivan@" in str(e.dn))
    assert ivan.values("homeDirectory") == [dit.mail_home("ivan@krasnoyarsk.example.org")]


def test_dovecot_never_sends_passwords_in_clear(example) -> None:
    settings = dict(dovecot.config(load_site(example), "mail")["settings"])
    assert settings["disable_plaintext_auth"] == "yes"
    assert settings["ssl"] == "required"
    assert settings["ssl_min_protocol"] == "TLSv1.2"


def test_root_password_hash_is_stable_and_verifiable() -> None:
    h = slapd.ssha512("secret", "dc=x")
    assert h == slapd.ssha512("secret", "dc=x") != slapd.ssha512("secret", "dc=y")
    raw = base64.b64decode(h.removeprefix("{SSHA512}"))
    digest, salt = raw[:64], raw[64:]
    assert hashlib.sha512(b"secret" + salt).digest() == digest


def test_secret_files_are_not_world_readable(example) -> None:
    _, plan = core.plan(example)
    files = {f.path: f for f in plan.hosts["mail"].files}
    for path in ("/etc/postfix/ldap/virtual_mailbox_maps.cf",):
        assert (files[path].mode, files[path].owner, files[path].group) == (0o640, "root",
                                                                             "postfix")
    assert files[dovecot.PASSDB_FILE].mode == 0o600
    assert (files[layout.slapd_key("mail")].mode, files[layout.slapd_key("mail")].group) == \
        (0o640, "openldap")
    assert files[layout.host_key("mail")].mode == 0o600
    assert files[layout.CONFIG_LDIF].mode == 0o600
    for f in files.values():
        holds_secret = "PRIVATE KEY" in str(f.data) or "bind_pw" in str(f.data) or \
            "dnpass" in str(f.data) or "olcRootPW" in str(f.data)
        assert not holds_secret or not f.mode & 0o004, f.path


def test_a_host_needs_what_a_bare_debian_lacks_and_postfix_starts_local_only(example) -> None:
    from mailstack.plan import hosts

    site = load_site(example)
    packages = hosts.packages(site, "mail")
    assert packages[0] == "python3-apt"  # Ansible's apt module installs the rest with it
    assert "ca-certificates" in packages  # main.cf's smtp_tls_CAfile, relays without a CA
    assert "getmail6" in packages  # the site collects remote mailboxes
    # fail2ban reads the journal (python3-systemd) and bans in nftables: both only Recommends
    assert packages[-3:] == ("fail2ban", "python3-systemd", "nftables")
    assert hosts.debconf(site, "mail") == {
        "slapd": ["slapd slapd/no_configuration boolean true"],
        "postfix": ["postfix postfix/main_mailer_type select Local only",
                    "postfix postfix/mailname string mail.krasnoyarsk.example.org"]}


def test_the_lab_image_holds_every_package_a_host_needs(example) -> None:
    """Inside the lab no apt source answers: a prepared host must already have them all."""
    import re

    from mailstack import resources
    from mailstack.plan import fail2ban, hosts

    script = (resources.LAB_SCRIPTS / "build-image.sh").read_text()
    listed = set(re.search(r"\nLAB_PACKAGES=\(\n(.*?)\n\)", script, re.S).group(1).split())
    site = load_site(example)
    every_role = {p for r in hosts.PACKAGES.values() for p in r} | set(hosts.BASE_PACKAGES) | \
        set(fail2ban.PACKAGES)
    assert set(hosts.packages(site, "mail")) | every_role <= listed


def test_port_25_refuses_the_sites_own_senders_except_from_its_relays(write_site) -> None:
    from tests.conftest import example_text

    site = load_site(write_site(example_text()))
    assert postfix.own_senders(site) == [
        ("krasnoyarsk.example.org", postfix.OWN_SENDER_REFUSED),
        ("shop@provider.example", postfix.OWN_SENDER_REFUSED)]  # a send_as address
    assert postfix.trusted_clients(site) == [("192.0.2.1/32", "OK")]  # head-office, by IP
    # the provider's relay wants a login: shared with strangers, never trusted
    assert postfix.trusted_client_names(site) == []
    restrictions = postfix.main_cf(site, "mail")["smtpd_sender_restrictions"]
    assert restrictions == (f"permit_mynetworks, check_client_access cidr:"
                            f"{postfix.TRUSTED_CLIENTS}, check_client_access texthash:"
                            f"{postfix.TRUSTED_CLIENT_NAMES}, check_sender_access "
                            f"texthash:{postfix.OWN_SENDERS}")
    named = load_site(write_site(example_text().replace("host: 192.0.2.1",
                                                        "host: relay.head-office.example")))
    assert postfix.trusted_clients(named) == []
    assert postfix.trusted_client_names(named) == [("relay.head-office.example", "OK")]
    # submission keeps its own: log in, then only one's own addresses
    services = {s.name: dict(s.options) for s in postfix.master_cf(site)}
    assert services["submission"]["smtpd_sender_restrictions"] == \
        "$mailstack_submission_sender_restrictions"


def _config(site, secrets) -> dict[str, list[str]]:
    mdb = next(e for e in slapd.config_entries(site, "mail", secrets)
               if not isinstance(e, str) and str(e.dn) == "olcDatabase={1}mdb,cn=config")
    out: dict[str, list[str]] = {}
    for attr, value in mdb.attrs:
        out.setdefault(attr, []).append(value)
    return out


def test_slapd_listens_on_ldapi_only_and_has_no_root_password_by_default(write_site) -> None:
    from tests.unit.test_site_checks import GOOD

    site = load_site(write_site(GOOD))
    secrets = {layout.secret_host_key("mail"): "k", layout.SECRET_LDAP_ADMIN: "pw"}
    assert slapd.listen_uris(site) == "ldapi:///"
    config = _config(site, secrets)
    assert "olcRootPW" not in config
    assert config["olcSecurity"] == ["simple_bind=64 ssf=64"]
    assert layout.SECRET_LDAP_ADMIN not in {r.name for r in secrets_mod.required(site)}

    asked = load_site(write_site(GOOD.replace(
        'ldap: {base: "dc=krasnoyarsk,dc=example,dc=org"}',
        'ldap: {base: "dc=krasnoyarsk,dc=example,dc=org", root_password: true, network: true}')))
    assert slapd.listen_uris(asked) == "ldap:/// ldapi:///"
    assert _config(asked, secrets)["olcRootPW"][0].startswith("{SSHA512}")


def test_slapd_serves_the_network_when_another_host_reads_the_directory(write_site) -> None:
    from tests.unit.test_site_checks import GOOD

    split = load_site(write_site(GOOD.replace(
        "roles: [ldap, mta, imap]}",
        "roles: [mta, imap]}\n  dir: {hostname: dir.krasnoyarsk.example.org, roles: [ldap]}")))
    assert slapd.serves_network(split)
    assert slapd.listen_uris(split) == "ldap:/// ldapi:///"
