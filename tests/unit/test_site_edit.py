"""`mailstack user`'s edits of site.yml: comments, order and layout kept; a site that check
refuses is never written (nor its secret)."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from mailstack import users
from mailstack.errors import InputError
from mailstack.site import edit
from mailstack.site.load import load_site
from tests.conftest import example_text

NEW = {"mail": "new@krasnoyarsk.example.org", "name": "New User",
       "protocols": ["imap", "submission"], "quota": "2G"}


def changes(old: str, new: str) -> list[str]:
    """The +/- lines of a diff (the rest of the file is byte for byte the same)."""
    return [line.rstrip("\n") for line in difflib.unified_diff(
        old.splitlines(True), new.splitlines(True), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_add_appends_one_item_and_keeps_every_other_byte() -> None:
    text = example_text()
    new = edit.add_account(text, NEW)
    assert changes(text, new) == [
        "+  - mail: new@krasnoyarsk.example.org",
        "+    name: New User",
        "+    protocols: [imap, submission]",
        "+    quota: 2G",
    ]
    # after the last account, before the blank line that ends the list
    assert "    name: Verify Probe\n  - mail: new@krasnoyarsk.example.org\n" in new
    assert "    quota: 2G\n\naliases:\n" in new


def test_the_added_account_is_what_the_loader_reads(tmp_path: Path) -> None:
    site = tmp_path / "site.yml"
    site.write_text(edit.add_account(example_text(), NEW))
    account = load_site(site).accounts[-1]
    assert (account.mail, account.name, account.protocols, account.quota) == (
        NEW["mail"], NEW["name"], ("imap", "submission"), "2G")


def test_remove_takes_the_item_and_the_comment_right_above_it() -> None:
    text = example_text()
    assert changes(text, edit.remove_account(text, "probe@krasnoyarsk.example.org")) == [
        "-  # kept for verify: against the real server, `mailstack verify -i INVENTORY "
        "--allow-writes`",
        "-  # mails this account only and writes to its entry only, and removes what it wrote",
        "-  - mail: probe@krasnoyarsk.example.org",
        "-    name: Verify Probe",
    ]
    # an item in the middle: its own comment goes with it, the next item's stays; her
    # membership goes with her (she is not the group's only member here)
    text = text.replace("members: [olga@krasnoyarsk.example.org]",
                        "members: [olga@krasnoyarsk.example.org, ivan@krasnoyarsk.example.org]")
    assert changes(text, edit.remove_account(text, "olga@krasnoyarsk.example.org")) == [
        "-  # Olga reads her mail over IMAP only (POP3 refuses her login; delivery is not a "
        "login) and",
        "-  # has a mailbox size limit of her own.",
        "-  - mail: olga@krasnoyarsk.example.org",
        "-    name: Olga Sidorova",
        "-    protocols: [imap, submission]",
        "-    quota: 2G",
        "-    aliases: [buh@krasnoyarsk.example.org]",
        "-    members: [olga@krasnoyarsk.example.org, ivan@krasnoyarsk.example.org]",
        "+    members: [ivan@krasnoyarsk.example.org]",
        "-    members: [accounting, management, olga@krasnoyarsk.example.org]",
        "+    members: [accounting, management]",
    ]


def test_lock_and_unlock_are_one_line_each_way() -> None:
    text = example_text()
    locked = edit.set_enabled(text, "olga@krasnoyarsk.example.org", False)
    assert changes(text, locked) == ["+    enabled: false"]
    assert edit.set_enabled(locked, "olga@krasnoyarsk.example.org", False) == locked
    assert edit.set_enabled(locked, "olga@krasnoyarsk.example.org", True) == text
    explicit = text.replace("    name: Olga Sidorova\n",
                            "    name: Olga Sidorova\n    enabled: true  # on leave in May\n")
    assert changes(explicit, edit.set_enabled(explicit, "olga@krasnoyarsk.example.org",
                                              False)) == [
        "-    enabled: true  # on leave in May", "+    enabled: false"]


def test_flow_style_accounts_are_written_round_trip_with_comments() -> None:
    text = ("# the shop\nsite: x  # short name\naccounts: [{mail: a@x.org, name: A}]  # all\n"
            "# the end\n")
    new = edit.add_account(text, {"mail": "b@x.org", "name": "B"})
    assert new == ("# the shop\nsite: x  # short name\naccounts: [{mail: a@x.org, name: A}, "
                   "{mail: b@x.org, name: B}] # all\n# the end\n")
    assert edit.add_account("site: x  # no accounts yet\n", {"mail": "b@x.org", "name": "B"}) \
        == "site: x  # no accounts yet\naccounts:\n  - mail: b@x.org\n    name: B\n"


def test_unknown_and_duplicate_accounts_are_refused() -> None:
    text = example_text()
    with pytest.raises(InputError, match=r"Olga@krasnoyarsk\.example\.org is already an account"):
        edit.add_account(text, {"mail": "Olga@krasnoyarsk.example.org", "name": "O"})
    for fn in (edit.remove_account, lambda t, m: edit.set_enabled(t, m, False)):
        with pytest.raises(InputError, match=r"nobody@x\.org is not an account"):
            fn(text, "nobody@x.org")


def _inventory(tmp_path: Path) -> Path:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    mail: {ansible_host: 192.0.2.9}\n")
    return inventory


def test_check_refuses_the_edited_site_and_nothing_is_written(example: Path,
                                                             tmp_path: Path) -> None:
    where = users.Where(inventory=_inventory(tmp_path))
    example.write_text(example.read_text().replace(
        "members: [olga@krasnoyarsk.example.org]",
        "members: [olga@krasnoyarsk.example.org, ivan@krasnoyarsk.example.org]"))
    before = example.read_bytes()
    secrets_before = sorted(p.name for p in (example.parent / "secrets").rglob("*"))
    asked = []

    def password() -> str:
        asked.append(1)
        return "a-good-long-password"

    with pytest.raises(InputError) as err:
        users.add(example, "x@elsewhere.example", "X", password, where=where)
    assert str(err.value) == (f"{example}:58: accounts[3].mail: 'x@elsewhere.example' is not "
                              "in one of the site's domains (krasnoyarsk.example.org)")
    with pytest.raises(InputError) as err:
        users.remove(example, "olga@krasnoyarsk.example.org", where=where)
    assert str(err.value).splitlines()[0] == (
        f"{example}:54: aliases[0].to[1]: 'olga@krasnoyarsk.example.org' points nowhere: no "
        "account or alias has that address; did you mean 'ivan@krasnoyarsk.example.org'?")
    assert example.read_bytes() == before and not asked
    assert sorted(p.name for p in (example.parent / "secrets").rglob("*")) == secrets_before


def test_set_keys_adds_replaces_and_removes_one_line_each() -> None:
    text = example_text().replace("    protocols: [imap, submission]\n    quota: 2G\n", "")
    olga = "olga@krasnoyarsk.example.org"
    one = edit.set_keys(text, olga, {"protocols": ["imap"], "quota": "2G"})
    assert changes(text, one) == ["+    protocols: [imap]", "+    quota: 2G"]
    two = edit.set_keys(one, olga, {"protocols": None, "quota": "3G"})
    assert changes(one, two) == ["-    protocols: [imap]", "-    quota: 2G", "+    quota: 3G"]
    assert edit.set_keys(two, olga, {"quota": None}) == text


def test_remove_drops_the_account_from_groups_send_as_and_folder_rights_on_their_lines() -> None:
    text = example_text().replace(
        "members: [ivan@krasnoyarsk.example.org]",
        "members: [ivan@krasnoyarsk.example.org, probe@krasnoyarsk.example.org]").replace(
        "      management: [read]\n",
        "      management: [read]\n      ivan@krasnoyarsk.example.org: [lookup]\n").replace(
        "send_as: [management]", "send_as: [ivan@krasnoyarsk.example.org, management]")
    edited = edit.remove_account(text, "ivan@krasnoyarsk.example.org")
    removed = [line for line in difflib.ndiff(text.splitlines(), edited.splitlines())
               if line.startswith(("- ", "+ "))]
    assert removed[-5:] == [
        "-     members: [ivan@krasnoyarsk.example.org, probe@krasnoyarsk.example.org]",
        "+     members: [probe@krasnoyarsk.example.org]",
        "-     send_as: [ivan@krasnoyarsk.example.org, management]",
        "+     send_as: [management]",
        "-       ivan@krasnoyarsk.example.org: [lookup]"]
    data = edit.plain(edit._load(edited, "site.yml"))
    assert "ivan@krasnoyarsk.example.org" not in str(data["groups"]) + str(data["shared_folders"])


def test_remove_refuses_the_only_member_of_a_group() -> None:
    with pytest.raises(InputError) as err:
        edit.remove_account(example_text(), "olga@krasnoyarsk.example.org")
    assert str(err.value) == (
        "site.yml: olga@krasnoyarsk.example.org is the only member of the group accounting: "
        "remove the group (or give it another member) first")
