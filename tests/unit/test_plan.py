"""Plan decisions as data: merges, lookups, indices, homes, hashes, modes."""

from __future__ import annotations

from mailstack import core
from mailstack import secrets as secrets_mod
from mailstack.ldap import filter as lf
from mailstack.plan import acl, dit, dovecot, layout, postfix, slapd
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
    assert dit.index_attributes(site) == ("mail", "mailLocalAddress", "mailstackDisabledService",
                                          "mailstackLocked", "objectClass")
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
    assert packages[-4:-1] == ("fail2ban", "python3-systemd", "nftables")
    assert packages[-1] == "nginx-light"  # it serves the client settings (plan/web.py)
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
    # root is root over ldapi either way (ppolicy exempts only the rootDN); the admin DN is a
    # real entry with the placeholder, its password set by RFC 3062, and it may manage
    for each in (site, asked):
        assert _config(each, secrets)["olcRootDN"] == [layout.ROOT_PEERCRED_DN]
        assert "olcRootPW" not in _config(each, secrets)
    admin = "cn=admin,dc=krasnoyarsk,dc=example,dc=org"
    assert admin not in {str(e.dn) for e in dit.entries(site)}
    entry = {str(e.dn): e for e in dit.entries(asked)}[admin].as_dict()
    assert entry["userPassword"] == [dit.PLACEHOLDER_PASSWORD]
    assert set(entry["objectClass"]) == {"organizationalRole", "simpleSecurityObject"}
    rules = acl.rules(asked)
    assert rules[:2] == [acl.root_rule(), f'to * by dn.exact="{admin}" manage by * break']
    assert acl.rules(site)[1] != rules[1]


def test_the_password_policy_is_ppolicy_with_quality_checks_and_no_lockout(write_site) -> None:
    from tests.unit.test_site_checks import GOOD

    site = load_site(write_site(GOOD.replace(
        'ldap: {base: "dc=krasnoyarsk,dc=example,dc=org"}',
        'ldap: {base: "dc=krasnoyarsk,dc=example,dc=org", password_policy: {min_length: 14}}')))
    config = [e for e in slapd.config_entries(site, "mail", {layout.secret_host_key("mail"): "k"})
              if not isinstance(e, str)]
    assert "ppolicy" in slapd.MODULES
    overlay = {str(e.dn): e for e in config}[
        "olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config"].as_dict()
    policy = "cn=default,ou=policies,dc=krasnoyarsk,dc=example,dc=org"
    assert overlay["olcPPolicyDefault"] == [policy]
    assert overlay["olcPPolicyHashCleartext"] == ["TRUE"]
    assert overlay["olcPPolicyUseLockout"] == ["FALSE"]
    entries = {str(e.dn): e.as_dict() for e in dit.entries(site)}
    assert "ou=policies,dc=krasnoyarsk,dc=example,dc=org" in entries
    p = entries[policy]
    assert (p["pwdMinLength"], p["pwdCheckQuality"], p["pwdLockout"], p["pwdMaxFailure"],
            p["pwdMaxAge"]) == (["14"], ["2"], ["FALSE"], ["0"], ["0"])
    assert "device" in p["objectClass"] and "pwdPolicy" in p["objectClass"]


def test_slapd_serves_the_network_when_another_host_reads_the_directory(write_site) -> None:
    from tests.unit.test_site_checks import GOOD

    split = load_site(write_site(GOOD.replace(
        "roles: [ldap, mta, imap]}",
        "roles: [mta, imap]}\n  dir: {hostname: dir.krasnoyarsk.example.org, roles: [ldap]}")))
    assert slapd.serves_network(split)
    assert slapd.listen_uris(split) == "ldap:/// ldapi:///"


def test_locked_addresses_are_refused_at_rcpt_before_unknown_ones(write_site) -> None:
    from tests.conftest import example_text

    text = example_text().replace(
        "  - mail: probe@krasnoyarsk.example.org\n",
        "  - mail: gone@krasnoyarsk.example.org\n    name: Gone\n    enabled: false\n"
        "    aliases: [old@krasnoyarsk.example.org]\n"
        "  - mail: probe@krasnoyarsk.example.org\n")
    site = load_site(write_site(text))
    main = postfix.main_cf(site, "mail")
    locked = [f"check_recipient_access {postfix.table(n)}"
              for n in ("locked_accounts", "locked_aliases")]
    assert main["smtpd_recipient_restrictions"] == ", ".join(
        [*locked, "reject_unlisted_recipient",
         f"check_recipient_access texthash:{postfix.LIST_REFUSALS}"])
    assert main["mailstack_submission_recipient_restrictions"] == ", ".join(locked)
    assert all(postfix.table(n) in main["proxy_read_maps"]
               for n in ("locked_accounts", "locked_aliases"))
    assert postfix.table_answer(site, "locked_accounts", "gone@krasnoyarsk.example.org") == \
        {postfix.LOCKED_REFUSED} == postfix.table_answer(site, "locked_aliases",
                                                         "old@krasnoyarsk.example.org")
    assert postfix.table_answer(site, "locked_accounts", "ivan@krasnoyarsk.example.org") == set()
    assert postfix.table_answer(site, "virtual_alias_maps", "old@krasnoyarsk.example.org") == set()
    assert postfix.table_answer(site, "virtual_alias_maps", "buh@krasnoyarsk.example.org") == \
        {"olga@krasnoyarsk.example.org"}
    # accept: a locked account still receives, and so do its aliases (not locked then)
    accept = load_site(write_site(text.replace("  schema: courier\n",
                                               "  schema: courier\n  locked_mail: accept\n")))
    main = postfix.main_cf(accept, "mail")
    assert main["smtpd_recipient_restrictions"] == (
        f"{locked[1]}, reject_unlisted_recipient, "
        f"check_recipient_access texthash:{postfix.LIST_REFUSALS}")
    assert postfix.table_answer(accept, "virtual_alias_maps", "old@krasnoyarsk.example.org") == \
        {"gone@krasnoyarsk.example.org"}
