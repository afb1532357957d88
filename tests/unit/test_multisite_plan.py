"""A head office and branches (inventories/head-office): checks, homes, replication, the path.

The plan of one server (the branch-office example) is not touched by any of this: its golden
render holds it. These tests read the head-office example's plan.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailstack import checks
from mailstack import secrets as secrets_mod
from mailstack.errors import InputError
from mailstack.ldap import filter as lf
from mailstack.ldap.ldif import Entry
from mailstack.plan import acl, dit, dovecot, hops, hosts, layout, postfix, slapd, topology
from mailstack.site.load import load_site
from tests.conftest import FIXED_SECRETS, ROOT

HEAD_OFFICE = ROOT / "inventories" / "head-office" / "site.yml"
HQ, TOMSK, OMSK = "mail.hq.taiga.example.org", "mail.tomsk.taiga.example.org", \
    "mail.omsk.taiga.example.org"


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The head-office example with made secrets: (site file, secret values)."""
    root = tmp_path_factory.mktemp("head-office")
    site_file = root / "site.yml"
    shutil.copy(HEAD_OFFICE, site_file)
    (root / "secrets" / "lab").mkdir(parents=True, mode=0o700)
    ca = root / "secrets" / "lab" / "isp-ca"
    shutil.copy(FIXED_SECRETS / "lab" / "head-office-ca", ca)
    ca.chmod(0o600)
    site = load_site(site_file)
    secrets_mod.generate(site, root / "secrets")
    store = secrets_mod.SecretStore(root / "secrets")
    return site_file, {ref.name: store.read(ref.name) for ref in secrets_mod.required(site)}


def errors(site_file: Path, text: str) -> list[str]:
    site_file.write_text(text, encoding="utf-8")
    return [f"{'.'.join(str(p) for p in f.path)}: {f.message}"
            for f in checks.run(load_site(site_file), secrets_mod.SecretStore(
                site_file.parent / "secrets")) if f.severity == "error"]


def example_text() -> str:
    return HEAD_OFFICE.read_text(encoding="utf-8")


def test_the_head_office_example_passes_check(office) -> None:
    site_file, _ = office
    assert errors(site_file, example_text()) == []


def test_ldap_provider_is_the_directorys_provider(office) -> None:
    site = load_site(office[0])
    assert site.hosts["hq"].roles == ("ldap", "mta", "imap", "relay")
    assert topology.provider(site) == "hq"
    assert topology.replicas(site) == ["omsk", "tomsk"]
    assert topology.mail_hosts(site) == ["hq", "omsk", "tomsk"]
    assert topology.relay_host(site) == "hq"


@pytest.mark.parametrize(("edit", "want"), [
    (("    mailhost: omsk\n", ""),
     "accounts.3: several hosts keep mailboxes (hq, omsk, tomsk): say which one keeps this "
     "account's (mailhost)"),
    (("    mailhost: omsk\n", "    mailhost: omks\n"),
     "accounts.3.mailhost: 'omks' is not a host with the mta and imap roles; did you mean "
     "'omsk'?"),
    (("roles: [ldap-replica, mta, imap]\n  omsk", "roles: [ldap-provider, mta, imap]\n  omsk"),
     "hosts.tomsk.roles: only one host may hold the directory's provider (found hq, tomsk): "
     "the others are ldap-replica"),
    (("roles: [ldap-provider, mta, imap, relay]", "roles: [ldap-provider, mta, imap]"),
     "hosts: several hosts keep mailboxes (hq, omsk, tomsk): one of them needs the role "
     "'relay', which carries mail between them"),
    (("roles: [ldap-provider, mta, imap, relay]", "roles: [ldap-provider, relay]"),
     "hosts.hq.roles: the relay role needs the mta and imap roles on the same host (a relay "
     "without mailboxes is not built yet)"),
    (("roles: [ldap-replica, mta, imap]\n  omsk",
      "roles: [ldap-replica, ldap-provider, mta, imap]\n  omsk"),
     "hosts.tomsk.roles: a host holds the provider or a replica of the directory, not both"),
])
def test_check_refuses_a_fleet_that_cannot_work(office, edit, want) -> None:
    old, new = edit
    text = example_text()
    assert old in text
    assert want in errors(office[0], text.replace(old, new, 1))


def test_a_shared_folder_needs_a_home_first(office) -> None:
    text = example_text() + ("shared_folders:\n  - name: Invoices\n"
                             "    rights: {staff: [read]}\n")
    assert "shared_folders: a shared folder on a site with several mail hosts is not built " \
           "yet (it needs a home of its own)" in errors(office[0], text)


def test_each_account_entry_names_its_home(office) -> None:
    site = load_site(office[0])
    homes = {e.as_dict()["mail"][0]: e.as_dict().get(dit.MAIL_HOST)
             for e in dit.entries(site) if dit.MAIL_HOST in e.as_dict()}
    assert homes == {"director@taiga.example.org": [HQ], "ivan@taiga.example.org": [TOMSK],
                     "maria@taiga.example.org": [TOMSK], "olga@taiga.example.org": [OMSK]}
    assert dit.MAIL_HOST in dit.owned_attributes(site)


def test_one_server_asks_no_home() -> None:
    site = load_site(ROOT / "inventories" / "branch-office" / "site.yml")
    assert not topology.several_homes(site)
    for lookup in dit.lookups(site, "mail"):
        assert dit.MAIL_HOST not in lf.attributes(lookup.filter), lookup.name
    assert all(dit.MAIL_HOST not in e.as_dict() for e in dit.entries(site))


def test_a_host_logs_in_and_delivers_only_the_accounts_homed_there(office) -> None:
    site = load_site(office[0])
    for host, mine in (("omsk", "olga"), ("hq", "director")):
        lookups = {lk.name: lk for lk in dit.lookups(site, host)}
        for which in ("passdb", "userdb"):
            found = {e.as_dict()["mail"][0].split("@")[0] for e in dit.entries(site)
                     if "mail" in e.as_dict() and lf.matches(
                         lf.substitute(lookups[which].filter, e.as_dict()["mail"][0]),
                         e.as_dict())}
            assert found == {mine}, (host, which)
            # what the file holds is that filter
            key = "pass_filter" if which == "passdb" else "user_filter"
            assert dovecot.ldap_settings(site, which, "ldapi:///", "pw", host)[key] == \
                lf.render(lookups[which].filter)
        iterate = dit.iterate_filter(site, host)
        assert {e.as_dict()["mail"][0] for e in dit.entries(site)
                if lf.matches(iterate, e.as_dict())} == {f"{mine}@taiga.example.org"}
    # the ACL's generated rules and the matrix read the same lookups: the home is searchable
    assert any(dit.MAIL_HOST in rule and "cn=dovecot" in rule for rule in acl.rules(site))


def test_mail_for_an_account_homed_elsewhere_goes_through_the_relay(office) -> None:
    site = load_site(office[0])
    ivan = "ivan@taiga.example.org"
    # on a branch: to the relay host, whatever the home
    assert postfix.table_answer(site, "remote_mailboxes", ivan, "omsk") == \
        {f"mailstack-site:[{HQ}]:25"}
    assert postfix.table_answer(site, "remote_mailboxes", ivan, "tomsk") == set()
    # on the relay: straight to the home the directory names
    assert postfix.table_answer(site, "remote_mailboxes", ivan, "hq") == \
        {f"mailstack-site:[{TOMSK}]:25"}
    branch = postfix.main_cf(site, "tomsk")
    assert branch["default_transport"] == f"mailstack-site:[{HQ}]:25"
    assert branch["transport_maps"] == "proxy:ldap:/etc/postfix/ldap/remote_mailboxes.cf"
    assert branch["sender_dependent_default_transport_maps"] == ""
    assert branch["smtpd_relay_restrictions"] == "permit_mynetworks, reject_unauth_destination"
    relay = postfix.main_cf(site, "hq")
    assert relay["default_transport"] == "relay-isp:[192.0.2.1]:25"
    assert relay["smtpd_relay_restrictions"] == \
        "permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination"
    for main in (branch, relay):
        assert main["smtpd_sender_restrictions"].startswith(
            "permit_mynetworks, permit_tls_clientcerts, ")
        assert main["relay_clientcerts"] == f"texthash:{hops.PEERS}"
    services = {s.name: dict(s.options) for s in postfix.master_cf(site, "tomsk")}
    assert "relay-isp" not in services
    assert services[hops.TRANSPORT]["smtp_tls_security_level"] == "verify"
    assert services[hops.TRANSPORT]["smtp_tls_cert_file"] == layout.host_cert("tomsk")
    assert "relay-isp" in {s.name for s in postfix.master_cf(site, "hq")}


def _spki_sha256(pem: str) -> str:
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def test_the_peers_are_known_by_their_keys(office) -> None:
    site_file, values = office
    site = load_site(site_file)
    key = {h: _spki_sha256(values[layout.secret_host_cert(h)]) for h in site.hosts}
    assert hops.peers(site, "hq", values) == [(key["omsk"], OMSK), (key["tomsk"], TOMSK)]
    assert hops.peers(site, "tomsk", values) == [(key["hq"], HQ)]


def _config(site, host: str, values) -> dict[str, dict[str, list[str]]]:
    return {str(e.dn): e.as_dict() for e in slapd.config_entries(site, host, values)
            if isinstance(e, Entry)}


def test_the_provider_serves_its_replicas(office) -> None:
    site_file, values = office
    site = load_site(site_file)
    config = _config(site, "hq", values)
    glob = config["cn=config"]
    assert glob["olcTLSVerifyClient"] == ["try"]
    assert glob["olcAuthzRegexp"] == [
        '{0}"^cn=mail[.]omsk[.]taiga[.]example[.]org$" '
        '"cn=replicator,ou=applications,dc=taiga,dc=example,dc=org"',
        '{1}"^cn=mail[.]tomsk[.]taiga[.]example[.]org$" '
        '"cn=replicator,ou=applications,dc=taiga,dc=example,dc=org"']
    assert "syncprov" in " ".join(config["cn=module{0},cn=config"]["olcModuleLoad"])
    mdb = config["olcDatabase={1}mdb,cn=config"]
    assert {"entryCSN eq", "entryUUID eq"} <= set(mdb["olcDbIndex"])
    assert mdb["olcLimits"] == ['{0}dn.exact="cn=replicator,ou=applications,dc=taiga,dc=example,'
                                'dc=org" size=unlimited time=unlimited']
    # the replication identity reads everything, before any rule that stops it
    assert mdb["olcAccess"][1] == ('{1}to * by dn.exact="cn=replicator,ou=applications,dc=taiga,'
                                   'dc=example,dc=org" read by * break')
    assert "olcOverlay={1}syncprov,olcDatabase={1}mdb,cn=config" in config
    assert "olcSyncrepl" not in mdb


def test_a_replica_copies_the_provider_and_refers_writes_to_it(office) -> None:
    site_file, values = office
    site = load_site(site_file)
    config = _config(site, "tomsk", values)
    mdb = config["olcDatabase={1}mdb,cn=config"]
    (sync,) = mdb["olcSyncrepl"]
    for part in (f"provider=ldap://{HQ}", "bindmethod=sasl", "saslmech=EXTERNAL",
                 "starttls=critical", "type=refreshAndPersist",
                 f"tls_cert={layout.host_cert('tomsk')}", "tls_reqcert=demand"):
        assert part in sync.split(" "), part
    assert "credentials" not in sync
    assert mdb["olcUpdateRef"] == [f"ldap://{HQ}"]
    assert {"entryCSN eq", "entryUUID eq"} <= set(mdb["olcDbIndex"])
    assert not any("ppolicy" in dn or "syncprov" in dn for dn in config)
    assert "olcTLSVerifyClient" not in config["cn=config"]
    plan = hosts.plan_host(site, "tomsk", values)
    paths = {f.path for f in plan.files}
    assert layout.DIT_LDIF not in paths and layout.CONFIG_LDIF in paths
    assert plan.facts["slapd"]["replica"] is True
    assert "slapd" in plan.services and "slapd" in plan.packages
    # the branch asks its replica first, then the provider, with a short timeout
    table = postfix.ldap_table(site, "virtual_mailbox_maps", hosts.ldap_uri(site, "tomsk"),
                               "pw", "tomsk")
    assert table["server_host"] == f"ldap://{TOMSK} ldap://{HQ}"
    assert table["timeout"] == "2"
    assert dovecot.ldap_settings(site, "passdb", hosts.ldap_uri(site, "tomsk"), "pw",
                                 "tomsk")["uris"] == f"ldap://{TOMSK} ldap://{HQ}"
    assert slapd.listen_uris(site, "tomsk") == "ldap:/// ldapi:///"


def test_only_the_provider_sets_passwords_and_each_host_lists_its_own_accounts(office) -> None:
    site_file, values = office
    site = load_site(site_file)
    hq = hosts.plan_host(site, "hq", values)
    assert len(hq.facts["slapd"]["first_passwords"]) == 4
    assert [a["mail"] for a in hosts.plan_host(site, "omsk", values).facts["accounts"]] == \
        ["olga@taiga.example.org"]


def test_a_head_office_render_is_refused_without_its_secrets(tmp_path) -> None:
    site_file = tmp_path / "site.yml"
    shutil.copy(HEAD_OFFICE, site_file)
    from mailstack import core

    with pytest.raises(InputError, match=r"secret 'tls/hq\.crt' is missing"):
        core.render(site_file, tmp_path / "build")


def test_apply_limit_takes_hosts_and_roles(office) -> None:
    site = load_site(office[0])
    assert topology.limit_hosts(site, "tomsk") == ["tomsk"]
    assert topology.limit_hosts(site, "ldap-replica") == ["omsk", "tomsk"]
    assert topology.limit_hosts(site, "ldap-provider,omsk") == ["hq", "omsk"]
    assert topology.limit_hosts(site, "relay") == ["hq"]
    with pytest.raises(InputError) as err:
        topology.limit_hosts(site, "tomks")
    assert str(err.value) == ("--limit: 'tomks' is neither a host of the site (hq, omsk, "
                              "tomsk) nor a role one of them has; did you mean 'tomsk'?")


def test_a_branch_has_a_watchdog_and_short_ldap_timeouts_the_head_office_neither(office) -> None:
    from mailstack.plan import dovecot as dovecot_plan
    from mailstack.plan import watchdog

    site_file, values = office
    site = load_site(site_file)
    branch = hosts.plan_host(site, "tomsk", values)
    paths = {f.path: f for f in branch.files}
    assert paths[watchdog.SCRIPT].mode == 0o755
    assert f"/etc/systemd/system/{watchdog.UNIT}.timer" in paths
    assert watchdog.SERVICE in branch.services
    assert watchdog.SERVICE in branch.facts["other_services"]
    settings = dict(dovecot_plan.config(site, "tomsk")["settings"])
    assert settings["import_environment"].split() == [
        "TZ", "CORE_OUTOFMEM", "CORE_ERROR", "LISTEN_PID", "LISTEN_FDS", "NOTIFY_SOCKET",
        "LDAPTIMEOUT=3", "LDAPNETWORK_TIMEOUT=3"]
    head = hosts.plan_host(site, "hq", values)
    assert watchdog.SCRIPT not in {f.path for f in head.files}
    assert "import_environment" not in dict(dovecot_plan.config(site, "hq")["settings"])
    # Postfix retries its queue after the replica's slapd (re)starts, as after the provider's,
    # and Dovecot's auth processes go back to asking the replica first
    retry = paths["/etc/systemd/system/slapd.service.d/mailstack-postfix-retry.conf"]
    started = [v for _, items in retry.data["sections"] for k, v in items if k == "ExecStartPost"]
    assert len(started) == 2 and "doveadm reload" in started[1]
    head_retry = {f.path: f for f in head.files}[
        "/etc/systemd/system/slapd.service.d/mailstack-postfix-retry.conf"]
    assert "doveadm reload" not in str(head_retry.data)


def test_verify_hands_each_host_mail_for_every_other_home(office) -> None:
    from mailstack.plan import plan_site
    from mailstack.verify import path_cases, probe_job

    site_file, values = office
    site = load_site(site_file)
    cases = {(c["via"], c["rcpt"]): c["hops"] for c in path_cases(site, values, "hq")}
    assert cases == {
        (TOMSK, "director@taiga.example.org"): [TOMSK, HQ],
        (OMSK, "director@taiga.example.org"): [OMSK, HQ],
        (HQ, "ivan@taiga.example.org"): [HQ, TOMSK],
        (OMSK, "ivan@taiga.example.org"): [OMSK, HQ, TOMSK],
        (HQ, "olga@taiga.example.org"): [HQ, OMSK],
        (TOMSK, "olga@taiga.example.org"): [TOMSK, HQ, OMSK]}
    assert path_cases(site, values, "tomsk") == []
    job = probe_job(site, plan_site(site, values), values, "tomsk")
    assert [a["mail"] for a in job["accounts"]] == ["ivan@taiga.example.org",
                                                    "maria@taiga.example.org"]
    assert job["hostname"] == TOMSK
    # the lookups as the branch makes them: its own home in the filters
    searches = [flt for svc in job["ldap"]["services"] for _, flt, _, _ in svc["lookups"]]
    assert any(f"(mailstackMailHost={TOMSK})" in flt for flt in searches)
