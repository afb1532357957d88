"""The folder tree and shared folders: Dovecot's names, times, ACL file and the site's checks."""

from __future__ import annotations

import base64

import pytest

from mailstack import checks
from mailstack.errors import InputError
from mailstack.plan import dovecot
from mailstack.plan import folders as pf
from mailstack.secrets import SecretStore
from mailstack.site.load import load_site


@pytest.mark.parametrize(("name", "want"), [
    # Dovecot 2.3.19 listed the Cyrillic folder as this (LIST "" "*" RETURN (SPECIAL-USE))
    ("Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"),
    ("Sent", "Sent"), ("R&D", "R&-D"), ("Public/Счета", "Public/&BCEERwQ1BEIEMA-"),
    ("Входящие 2024", "&BBIERQQ+BDQETwRJBDgENQ- 2024"),  # Dovecot accepted it as is
])
def test_utf7(name: str, want: str) -> None:
    assert pf.utf7(name) == want


@pytest.mark.parametrize("name", ["Отправленные", "Счета/2024 год", "a&b", "Ünïcödé ✓"])
def test_utf7_round_trip(name: str) -> None:
    def decode(text: str) -> str:
        out, rest = [], text
        while rest:
            head, amp, rest = rest.partition("&")
            out.append(head)
            if amp:
                chunk, _, rest = rest.partition("-")
                raw = chunk.replace(",", "/")
                out.append("&" if not chunk else
                           base64.b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-16-be"))
        return "".join(out)

    assert decode(pf.utf7(name)) == name


@pytest.mark.parametrize(("retention", "want"), [
    ("30d", "30 days"), ("14d", "14 days"), ("12h", "12 hours"), ("90s", "90 secs"),
    ("5m", "5 mins"), ("2w", "2 weeks")])
def test_dovecot_time(retention: str, want: str) -> None:
    assert pf.dovecot_time(retention) == want


@pytest.mark.parametrize("name", ["a.b", "Old%", "x*", "", " x", "/x", "x/", "a//b", "INBOX",
                                  "inbox/sub", "~x", 'a"b'])
def test_names_dovecot_cannot_keep(name: str) -> None:
    assert pf.name_problem(name)


@pytest.mark.parametrize("name", ["Отправленные", "Old mail", "Archive/2024", "R&D", "x~y"])
def test_names_dovecot_keeps(name: str) -> None:
    assert pf.name_problem(name) is None


def test_example_renders_tree_acl_and_groups(example) -> None:
    site = load_site(example)
    boxes = {b["name"]: b for b in pf.mailboxes(site)}
    assert boxes['"Отправленные"']["special_use"] == "\\Sent"
    assert boxes['"Trash"']["autoexpunge"] == "30 days"
    assert boxes['"Junk"']["autoexpunge"] == "14 days"
    assert boxes['"Drafts"']["autoexpunge"] is None
    assert pf.acl_lines(site) == [
        "Public/Invoices group=accounting lrwstie",
        "Public/Invoices group=management lrs",
        "Public/Invoices user=invoices@krasnoyarsk.example.org lp",
        "Public/Team group=staff lrwsi",
    ]
    assert pf.public_dirs(site) == ["/var/vmail/public/.Invoices", "/var/vmail/public/.Team"]
    # Ivan is in management (read Invoices) and staff (file into Team): both count
    rights = pf.account_rights(site)
    assert rights["Public/Invoices"] == {"olga@krasnoyarsk.example.org": "lrwstie",
                                         "ivan@krasnoyarsk.example.org": "lrs"}
    assert rights["Public/Team"] == {"olga@krasnoyarsk.example.org": "lrwsi",
                                     "ivan@krasnoyarsk.example.org": "lrwsi"}
    assert pf.special_use_folders(site)["&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"] == "\\Sent"
    conf = dovecot.config(site, "mail")
    plugins = dict(conf["settings"])["mail_plugins"]  # type: ignore[call-overload]
    assert "acl" in plugins.split() and "quota" in plugins.split()
    assert "imap_acl" in conf["imap_plugins"]  # type: ignore[operator]
    assert conf["public"] == {"prefix": "Public/", "location": pf.PUBLIC_LOCATION}
    userdb = dovecot.ldap_settings(site, "userdb", "ldapi:///", "pw")
    assert userdb["user_attrs"].endswith(",mailstackAclGroup=acl_groups")


def test_no_shared_folder_no_public_namespace(example) -> None:
    text = example.read_text(encoding="utf-8")
    start = text.index("shared_folders:")
    end = text.index("\n# Every account's folders")
    example.write_text(text[:start] + text[end:], encoding="utf-8")
    site = load_site(example)
    assert dovecot.config(site, "mail")["public"] is None
    assert pf.acl_lines(site) == []


def test_acl_groups_value_is_one_value() -> None:
    assert pf.acl_groups_value(["staff", "accounting"]) == "accounting,staff"


def errors(path) -> list[str]:
    try:
        site = load_site(path)
    except InputError as err:
        return str(err).splitlines()
    return [str(f) for f in checks.run(site, SecretStore(path.parent / "secrets"))]


@pytest.mark.parametrize(("old", "new", "want"), [
    ("  - {name: Archive, special_use: archive}",
     "  - {name: Archive, special_use: archive}\n  - {name: Drafts}",
     "folders[5].name: folder 'Drafts' is already folders[0]"),
    ("  - {name: Archive, special_use: archive}",
     "  - {name: Archive, special_use: trash}",
     "folders[4].special_use: special_use trash is already folders[2]'s"),
    ("  - {name: Archive, special_use: archive}",
     "  - {name: Old.mail}",
     "folders[4].name: 'Old.mail': a folder name cannot contain '.'"),
    ("      management: [read]", "      managment: [read]",
     "shared_folders[0].rights.managment: 'managment' is neither a group nor an account; "
     "did you mean 'management'?"),
    ("    address: invoices@krasnoyarsk.example.org",
     "    address: olga@krasnoyarsk.example.org",
     "shared_folders[0].address: olga@krasnoyarsk.example.org is an account"),
    ("  - name: Invoices\n", "  - name: Invoices\n    owner: olga@krasnoyarsk.example.org\n",
     "shared_folders[0].owner: owner olga@krasnoyarsk.example.org: an account as owner is not "
     "supported yet; use public"),
])
def test_checks(example, old: str, new: str, want: str) -> None:
    text = example.read_text(encoding="utf-8")
    assert old in text
    example.write_text(text.replace(old, new), encoding="utf-8")
    found = errors(example)
    assert any(want in line for line in found), found


def test_unknown_right_is_refused(example) -> None:
    text = example.read_text(encoding="utf-8")
    example.write_text(text.replace("      management: [read]", "      management: [raed]"),
                       encoding="utf-8")
    found = errors(example)
    assert any("shared_folders[0].rights.management" in line for line in found), found
