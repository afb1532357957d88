"""Dovecot's per-account services, locked accounts, auth cache and quotas, as rendered."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from mailstack import resources
from mailstack.plan import dit, dovecot, hosts, layout
from mailstack.site.load import load_site


def _conf(site) -> dict[str, str]:
    return dict(dovecot.config(site, "mail")["settings"])  # type: ignore[arg-type]


def test_the_deny_passdb_comes_first_and_finds_locked_accounts_and_closed_services(
        example: Path) -> None:
    site = load_site(example)
    passdbs = dovecot.config(site, "mail")["passdbs"]
    assert [(p["args"], p["deny"]) for p in passdbs] == [  # type: ignore[union-attr]
        (dovecot.DENY_FILE, True), (dovecot.PASSDB_FILE, False)]
    deny = dovecot.ldap_settings(site, "passdb_deny", layout.LDAPI_URI, "pw")
    assert deny["pass_filter"] == (
        "(&(objectClass=mailstackEntry)(mail=%u)"
        "(|(mailstackLocked=TRUE)(mailstackDisabledService=%Ls)))")
    # found is enough: no bind as the user, no password read
    assert "auth_bind" not in deny and deny["pass_attrs"] == "mail=user"
    assert deny["dn"] == dovecot.ldap_settings(site, "passdb", layout.LDAPI_URI, "pw")["dn"]


def test_passdb_names_stay_outside_fail2ban_s_ldap_line() -> None:
    """fail2ban's dovecot filter counts `[a-z-]{3,15}(user,ip): unknown user`; the deny passdb
    logs that for every good login when auth_verbose is on."""
    import re

    counted = re.compile(r"^[a-z\-]{3,15}\(")
    for name in (dovecot.DENY_PASSDB_NAME, dovecot.PASSDB_NAME):
        assert not counted.match(f"{name}(ivan@x,10.0.0.1): unknown user"), name


def test_the_auth_cache_is_on_with_a_short_negative_ttl(example: Path) -> None:
    conf = _conf(load_site(example))
    assert conf["auth_cache_size"] == "10M"
    assert conf["auth_cache_negative_ttl"] == "30 secs"
    assert conf["auth_verbose"] == "yes"
    assert dovecot.flush_command() == ["doveadm", "auth", "cache", "flush"]
    assert dovecot.flush_command("ivan@x.org") == ["doveadm", "auth", "cache", "flush",
                                                   "ivan@x.org"]
    assert dovecot.flush_hosts(load_site(example)) == ("mail",)
    facts = hosts.plan_host(load_site(example), "mail", _secrets(example)).facts
    assert facts["dovecot"] == {"flush_all": dovecot.flush_command(),
                                "public_dirs": ["/var/vmail/public/.Invoices",
                                                "/var/vmail/public/.Team"],
                                "tree": ["Drafts", "Отправленные", "Trash", "Junk", "Archive"],
                                "tree_file": "/var/lib/mailstack/dovecot-folder-tree.json",
                                "sieve_dir": "/etc/dovecot/sieve"}


def _secrets(example: Path) -> dict[str, str]:
    from mailstack import secrets

    site = load_site(example)
    store = secrets.SecretStore(example.parent / "secrets")
    return {r.name: store.read(r.name) for r in secrets.required(site)}


def test_the_quota_comes_from_the_userdb_only_where_the_entry_has_one(example: Path) -> None:
    site = load_site(example)
    attrs = dovecot.ldap_settings(site, "userdb", layout.LDAPI_URI, "pw")["user_attrs"]
    assert attrs.split(",")[1] == f"{dit.QUOTA}=quota_rule=*:bytes=%$"
    assert "%{ldap:" not in attrs


def test_when_full_and_warning_change_the_configuration(example: Path) -> None:
    site = load_site(example)
    assert _conf(site)["quota_full_tempfail"] == "yes"
    refuse = dataclasses.replace(site, quota=dataclasses.replace(site.quota, when_full="refuse",
                                                                 warning=80))
    assert _conf(refuse)["quota_full_tempfail"] == "no"
    plugin = dict(dovecot.config(refuse, "mail")["quota"]["settings"])  # type: ignore[index]
    assert plugin["quota_warning"] == (
        "storage=80%% quota-warning 80 %u postmaster@krasnoyarsk.example.org")
    assert plugin["quota"] == "count:User quota"


def test_the_quota_warning_script_is_placed_by_base_and_writes_a_message() -> None:
    (spec,) = dovecot.script_files()
    assert spec.path == dovecot.QUOTA_WARNING and spec.mode == 0o755
    path = resources.PACKAGE / "data" / "quota_warning.py"
    module_spec = importlib.util.spec_from_file_location("quota_warning", path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    msg = module.message("90", "olga@x.org", "postmaster@x.org")
    assert msg["To"] == "olga@x.org" and msg["Auto-Submitted"] == "auto-generated"
    assert "90%" in msg["Subject"]
    assert module.main(["90"]) == 64
