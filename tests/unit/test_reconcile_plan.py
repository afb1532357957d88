"""Reconcile without a host: which entries are locked or pruned in which mode, which attributes
the site owns, which files and services left, where mailboxes are archived, the recap."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import ldap3
import pytest

from mailstack import apply, core, resources, verify
from mailstack.plan import dit, layout
from mailstack.site.load import load_site
from tests.unit.test_apply_ldap_modules import ORDERED, _load, attrs, entries, utils

rc = _load("ansible_collections.mailstack.mail.plugins.module_utils.reconcile",
           resources.COLLECTION / "plugins" / "module_utils" / "reconcile.py")
placed = _load("mailstack_placed", resources.MODULES / "placed.py")

PEOPLE = "ou=people,dc=example,dc=org"
ALIASES = "ou=aliases,dc=example,dc=org"


def account(mail: str, origin: str | None = "site", locked: bool = False,
            entry_class: bool = True) -> tuple[str, dict]:
    pairs = [("objectClass", "inetOrgPerson"), ("objectClass", "CourierMailAccount"),
             ("mail", mail), ("cn", mail), ("userPassword", "{ARGON2}x")]
    if entry_class:
        pairs.append(("objectClass", dit.ENTRY_CLASS))
    if origin:
        pairs.append((dit.ORIGIN, origin))
    if locked:
        pairs.append((dit.LOCKED, "TRUE"))
    return f"mail={mail},{PEOPLE}", attrs(*pairs)


def live_of(*items: tuple[str, dict]) -> list:
    return [(d, a, utils.norm_dn(d)) for d, a in items]


def test_site_mode_locks_every_entry_the_render_lacks_whoever_made_it() -> None:
    kept, gone_site, gone_cli, gone_foreign = (
        account("ivan@example.org"), account("olga@example.org"),
        account("petr@example.org", "cli"), account("hr@example.org", None, entry_class=False))
    wanted = {utils.norm_dn(kept[0])}
    left = rc.left_site(live_of(kept, gone_site, gone_cli, gone_foreign), wanted, rc.SITE)
    assert [d for d, _ in left] == [gone_site[0], gone_cli[0], gone_foreign[0]]


def test_directory_mode_touches_only_what_apply_created() -> None:
    gone_site, gone_cli, foreign = (account("olga@example.org"),
                                    account("petr@example.org", "cli"),
                                    account("hr@example.org", None, entry_class=False))
    left = rc.left_site(live_of(gone_site, gone_cli, foreign), set(), rc.DIRECTORY)
    assert [d for d, _ in left] == [gone_site[0]]


def test_a_dn_compares_without_case_or_spaces() -> None:
    entry = account("Olga@Example.org")
    assert rc.left_site(live_of(entry), {utils.norm_dn("MAIL=olga@example.org, " + PEOPLE)},
                        rc.SITE) == []


def test_locking_adds_the_class_when_missing_and_is_idempotent() -> None:
    _, foreign = account("hr@example.org", None, entry_class=False)
    assert rc.lock_changes(foreign) == {"objectClass": [("add", [b"mailstackEntry"])],
                                        "mailstackLocked": [("replace", [b"TRUE"])]}
    _, ours = account("olga@example.org")
    assert rc.lock_changes(ours) == {"mailstackLocked": [("replace", [b"TRUE"])]}
    _, locked = account("olga@example.org", locked=True)
    assert rc.lock_changes(locked) == {}


def _reconcile(monkeypatch, live: list, wanted: list, mode: str, prune: bool):
    monkeypatch.setattr(entries, "search_subtree",
                        lambda conn, base, scope=None: [(d, a) for d, a in live
                                                        if d.endswith("," + base)])
    return entries.plan_reconcile(None, wanted, [PEOPLE, ALIASES], mode, prune)


def test_reconcile_locks_or_prunes(monkeypatch) -> None:
    kept, gone, locked = (account("ivan@example.org"), account("olga@example.org"),
                          account("petr@example.org", locked=True))
    alias = (f"mail=office@example.org,{ALIASES}",
             attrs(("objectClass", "CourierMailAlias"), ("objectClass", dit.ENTRY_CLASS),
                   ("mail", "office@example.org"), ("maildrop", "ivan@example.org")))
    live = [kept, gone, locked, alias]
    locks, deletes, still = _reconcile(monkeypatch, live, [kept], rc.SITE, False)
    assert locks == [(gone[0], {dit.LOCKED: [(ldap3.MODIFY_REPLACE, [b"TRUE"])]}),
                     (alias[0], {dit.LOCKED: [(ldap3.MODIFY_REPLACE, [b"TRUE"])]})]
    assert (deletes, still) == ([], [locked[0]])
    locks, deletes, still = _reconcile(monkeypatch, live, [kept], rc.SITE, True)
    assert ([d for d, _ in deletes], locks, still) == ([gone[0], locked[0], alias[0]], [], [])
    # the change records a plan shows
    text = entries.change_ldif([], [], deletes)
    assert f"dn: {gone[0]}\nchangetype: delete\n" in text


def test_site_owned_attributes_go_when_the_render_drops_them(monkeypatch) -> None:
    """A lock, a disabled service, a quota the site no longer sets are deleted; attributes the
    site does not own (a description an admin added) and the password stay."""
    dn = f"mail=olga@example.org,{PEOPLE}"
    have = attrs(("mail", "olga@example.org"), (dit.LOCKED, "TRUE"), (dit.QUOTA, "100"),
                 (dit.DISABLED_SERVICE, "pop3"), ("description", "admin's note"),
                 ("userPassword", "{ARGON2}x"))
    monkeypatch.setattr(entries, "read_entry", lambda conn, d: have)
    wanted = [(dn, attrs(("mail", "olga@example.org"), ("userPassword", "{CRYPT}!x")))]
    owned = frozenset(a.lower() for a in (*dit.SITE_OWNED, "maildrop"))
    _, modifies, _ = entries.plan_data(None, wanted, ORDERED, frozenset({"userpassword"}), owned)
    assert modifies == [(dn, {n: [(ldap3.MODIFY_DELETE, [])] for n in
                              (dit.LOCKED, dit.QUOTA, dit.DISABLED_SERVICE)})]
    assert entries.unlocked(modifies) == [dn]
    # directory mode: existing accounts are never modified
    _, modifies, _ = entries.plan_data(None, wanted, ORDERED, frozenset({"userpassword"}), owned,
                                       utils.norm_dn(PEOPLE))
    assert modifies == []


def test_who_created_an_entry_is_written_once(monkeypatch) -> None:
    """An account `mailstack user add` created stays mailstackOrigin: cli after an apply that
    renders it from the site file ("site"); an older entry without an origin gets one."""
    dn = f"mail=olga@example.org,{PEOPLE}"
    wanted = [(dn, attrs(("mail", "olga@example.org"), (dit.ORIGIN, dit.ORIGIN_SITE)))]
    initial = frozenset({dit.ORIGIN.lower()})
    have = attrs(("mail", "olga@example.org"), (dit.ORIGIN, dit.ORIGIN_CLI))
    monkeypatch.setattr(entries, "read_entry", lambda conn, d: have)
    _, modifies, _ = entries.plan_data(None, wanted, ORDERED, frozenset(), frozenset(),
                                       None, initial)
    assert modifies == []
    have = attrs(("mail", "olga@example.org"))
    _, modifies, _ = entries.plan_data(None, wanted, ORDERED, frozenset(), frozenset(),
                                       None, initial)
    assert modifies == [(dn, {dit.ORIGIN: [(ldap3.MODIFY_ADD, [b"site"])]})]
    # the control: without it, apply would rewrite the origin
    have = attrs(("mail", "olga@example.org"), (dit.ORIGIN, dit.ORIGIN_CLI))
    _, modifies, _ = entries.plan_data(None, wanted, ORDERED, frozenset(), frozenset())
    assert modifies == [(dn, {dit.ORIGIN: [(ldap3.MODIFY_REPLACE, [b"site"])]})]


def test_a_removed_alias_target_goes(monkeypatch) -> None:
    dn = f"mail=office@example.org,{ALIASES}"
    have = attrs(("mail", "office@example.org"), ("maildrop", "ivan@example.org"),
                 ("maildrop", "olga@example.org"))
    monkeypatch.setattr(entries, "read_entry", lambda conn, d: have)
    wanted = [(dn, attrs(("mail", "office@example.org"), ("maildrop", "ivan@example.org")))]
    _, modifies, _ = entries.plan_data(None, wanted, ORDERED, frozenset(), frozenset())
    assert modifies == [(dn, {"maildrop": [(ldap3.MODIFY_REPLACE, [b"ivan@example.org"])]})]


def test_the_module_reads_what_plan_decides(example: Path) -> None:
    site = load_site(example)
    facts = dit.reconcile_facts(site)
    assert facts["bases"] == [str(dit.ou(site, o)) for o in
                              (layout.OU_PEOPLE, layout.OU_ALIASES, layout.OU_DOMAINS,
                               layout.OU_GROUPS)]
    assert facts["accounts"] == site.ldap.accounts == "site"
    assert "mailstackLocked" in facts["owned"]
    assert rc.DIRECTORY in entries.DOCUMENTATION and "owned_attributes" in entries.DOCUMENTATION


# -- mailboxes -------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["ivan@krasnoyarsk.example.org", "Olga.S@Example.ORG"])
def test_the_archive_finds_the_home_plan_decides(address: str) -> None:
    assert rc.mail_home(layout.VMAIL_DIR, address) == dit.mail_home(address)
    now = datetime.datetime(2026, 12, 1, 23, 59, tzinfo=datetime.UTC)
    archived = rc.archive_path(f"{layout.VMAIL_DIR}/{layout.MAIL_ARCHIVE}", address, now)
    local, _, domain = address.lower().rpartition("@")
    assert archived == f"/var/vmail/.archive/2026-12-01/{domain}/{local}"


def test_a_second_prune_the_same_day_never_overwrites() -> None:
    taken = {"/a/x", "/a/x.2"}
    assert rc.free_path("/a/x", taken.__contains__) == "/a/x.3"
    assert rc.free_path("/a/y", taken.__contains__) == "/a/y"


# -- files and services ----------------------------------------------------------------------

def _host(tree: Path) -> dict:
    return json.loads((tree / "manifest.json").read_text())["hosts"]["mail"]


def test_files_and_timers_of_a_removed_remote_mailbox_leave(example: Path, tmp_path: Path) -> None:
    before = _host(core.render(example, tmp_path / "a"))
    text = example.read_text()
    cut = text.index("  - {account: olga@krasnoyarsk.example.org, protocol: imap")
    end = text.index("\n\n", cut)
    smaller = tmp_path / "site.yml"
    smaller.write_text(text[:cut] + text[end:])
    after = _host(core.render(smaller, tmp_path / "b", secrets_dir=example.parent / "secrets"))
    left = rc.left_files(before, after)
    assert left and all("imap-olga-provider.example" in p for p, _ in left), left
    secret = [p for p, is_secret in left if is_secret]
    assert "/etc/mailstack/fetch/imap-olga-provider.example-imap.provider.example.password" \
        in secret
    assert rc.left_services(before, after) == \
        ["mailstack-fetch@imap-olga-provider.example-imap.provider.example.timer"]
    assert rc.left_files(None, after) == [] and rc.left_services(None, after) == []
    # the record keeps paths and services, never a checksum (a secret file's is a password's)
    record = json.loads(placed.record_text("krasnoyarsk", before))
    assert "sha256" not in json.dumps(record)
    assert rc.left_files(record["host"], after) == left
    assert rc.left_services(record["host"], after) == rc.left_services(before, after)


def test_a_record_of_another_site_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "placed.json"
    path.write_text(placed.record_text("other", {"files": {"/etc/x": {}}}))
    assert placed.read_record(str(path), "mine") is None
    assert placed.read_record(str(path), "other") == {"files": {"/etc/x": {"secret": False,
                                                                         "role": None}},
                                                      "facts": {"other_services": []}}
    assert placed.read_record(str(tmp_path / "missing"), "mine") is None


def test_a_removed_file_is_kept_under_a_dated_backup() -> None:
    now = datetime.datetime(2026, 12, 1, 6, 5, 4, tzinfo=datetime.UTC)
    assert rc.backup_target("/var/backups/mailstack", "/etc/mailstack/fetch/x.rc", now) == \
        "/var/backups/mailstack/removed-20261201T060504Z/etc/mailstack/fetch/x.rc"


# -- the recap -------------------------------------------------------------------------------

def test_the_recap_names_what_was_locked_pruned_and_removed() -> None:
    events = apply._Events(lambda line: None)
    dn = f"mail=olga@example.org,{PEOPLE}"
    events.feed({"event": "ok", "host": "mail", "role": "slapd", "task": "Bring the tree",
                 "action": "mailstack.mail.ldap_entries", "changed": True,
                 "msg": f"locked {dn}", "reconciled": [["locked", dn]]})
    events.feed({"event": "ok", "host": "mail", "role": "base", "task": "Remove",
                 "action": "mailstack.mail.placed", "changed": True, "msg": "x",
                 "reconciled": [["stopped", "mailstack-fetch@x.timer"], ["deleted", "/p"]]})
    report = apply.ApplyReport("s", Path("b"), Path("i"), False, events.hosts, 1.0)
    lines = report.lines()
    assert f"  locked: {dn}" in lines
    assert "  stopped: mailstack-fetch@x.timer" in lines and "  deleted: /p" in lines


def test_a_passing_host_check_can_carry_a_note(tmp_path: Path) -> None:
    """testinfra's record_property("note", ...) reaches the check's detail (verify() then
    lists it among the report's notes): how directory mode names accounts it does not own."""
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase name="test_no_account_logs_in_that_the_site_does_not_'
        'have[ssh://root@10.0.0.2]"><properties><property name="note" value="1 accounts log '
        'in"/></properties></testcase></testsuite></testsuites>')
    [check] = verify._junit_checks(junit, "mail")
    assert check.ok and check.name == "host: no account logs in that the site does not have"
    assert check.detail == "1 accounts log in"


@pytest.mark.parametrize(("argv", "prune"), [([], False), (["--prune"], True)])
def test_apply_prune_reaches_the_playbook(example: Path, tmp_path: Path, monkeypatch,
                                          argv: list[str], prune: bool) -> None:
    from mailstack.cli import main

    seen: dict = {}

    def run_playbook(inventory, build, extra_vars, **kwargs):
        seen.update(extra_vars)
        return apply.ApplyReport("s", build, inventory, False, {}, 0.0)

    monkeypatch.setattr(apply, "run_playbook", run_playbook)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {hosts: {mail: {}}}\n")
    assert main(["apply", str(example), "-i", str(inventory), "-b", str(tmp_path / "b"),
                 *argv]) == 0
    assert seen["mailstack__prune"] is prune
