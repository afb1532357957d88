"""Groups and distribution lists, live in the office lab (the example's staff list, team@):

* verify's `lists` part passes: a posting reaches Olga once although staff reaches her through
  accounting and directly, Ivan through management; mail from outside to the `post: site` list
  is refused on port 25 with the list's own 5.7.1;
* it FAILS when the host's virtual_alias_maps loses the group table, and when the directory's
  ACL hides ou=groups from cn=postfix; a re-apply puts both back;
* a members-only list: a member posts, a non-member is refused on 587 (FAILS without the
  list_posters check), everyone on port 25;
* a group and a member removed from the site leave the directory on the next apply (the group
  locked, then pruned; the member value and the accounts' mailstackAclGroup follow); a locked
  list expands no more.
"""

from __future__ import annotations

import copy
import time

import yaml

from mailstack import apply
from mailstack.plan import dit
from mailstack.site.load import load_site
from tests.conftest import live

pytestmark = live(ssh=True, ansible=True)

DOMAIN = "krasnoyarsk.example.org"
IVAN, OLGA, TEAM = f"ivan@{DOMAIN}", f"olga@{DOMAIN}", f"team@{DOMAIN}"
TABLE = "ldap:/etc/postfix/ldap/virtual_alias_groups.cf"


def _failed(checks) -> dict[str, str]:
    return {name: c.detail for name, c in checks.items() if not c.ok}


def test_the_lists_part_passes(office_lab) -> None:
    started = time.monotonic()
    checks = office_lab.checks(["lists"])
    print(f"\n[lists part: {time.monotonic() - started:.1f} s]")
    assert not _failed(checks), _failed(checks)
    for who in (IVAN, OLGA):
        assert f"{who}: the list {TEAM}'s message arrives exactly once" in checks
    assert f"port 25: mail from outside to the list {TEAM} (post: site) is refused" in checks
    # what Postfix's table answers: nested groups followed, and Olga TWICE (through accounting
    # and directly): dict_ldap does not deduplicate; cleanup does (she got one copy above)
    raw = office_lab.sh(f"postmap -q {TEAM} {TABLE}").strip()
    print(f"[postmap -q {TEAM}: {raw!r}]")
    assert sorted(v.strip() for v in raw.split(",")) == [IVAN, OLGA, OLGA]


def test_without_the_group_table_the_lists_part_fails(office_lab) -> None:
    office_lab.sh("postconf -e 'virtual_alias_maps = proxy:ldap:/etc/postfix/ldap/"
                  "virtual_alias_maps.cf' && postfix reload")
    try:
        failed = _failed(office_lab.checks(["lists"]))
        print(f"[without the group table: {failed}]")
        assert f"port 25: mail from outside to the list {TEAM} (post: site) is refused" in failed
        assert any("5.1.1" in detail for detail in failed.values()), failed
    finally:
        office_lab.apply()
    assert not _failed(office_lab.checks(["lists"]))


def test_an_acl_hiding_the_groups_from_postfix_fails(office_lab) -> None:
    site = load_site(office_lab.site)
    groups, postfix = dit.ou(site, "groups"), dit.service_dn(site, "postfix")
    db = office_lab.sh(f"ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -b cn=config "
                       f"'(olcSuffix={site.ldap.base})' dn").split("dn: ", 1)[1].split()[0]
    office_lab.sh(f"""ldapmodify -Q -Y EXTERNAL -H ldapi:/// <<'EOF'
dn: {db}
changetype: modify
add: olcAccess
olcAccess: {{0}}to dn.subtree="{groups}" by dn.exact="{postfix}" none by * break
EOF""")
    try:
        rc = office_lab.mail.exec(["postmap", "-q", TEAM, TABLE], timeout=60)
        print(f"[postmap with the groups hidden: exit {rc.returncode}, {rc.stderr.strip()!r}]")
        assert rc.returncode != 0 or not rc.stdout.strip()
        failed = _failed(office_lab.checks(["lists"]))
        print(f"[groups hidden from postfix: {failed}]")
        assert any(TEAM in name for name in failed), failed
    finally:
        office_lab.apply()
    assert office_lab.sh(f"postmap -q {TEAM} {TABLE}").strip()


def _apply(office_lab, prune: bool = False) -> None:
    report = apply.apply(office_lab.site, inventory=office_lab.state.inventory,
                         build_dir=office_lab.build, prune=prune, out=lambda line: None)
    assert report.ok, report.lines()
    print(f"[apply{' --prune' if prune else ''} {report.seconds:.1f} s]")


def test_removed_groups_and_members_leave_the_directory(office_lab) -> None:
    text = office_lab.site.read_text(encoding="utf-8")
    original = yaml.safe_load(text)
    site = load_site(office_lab.site)
    dn = {g.name: str(dit.group_dn(site, g.name)) for g in site.groups}
    ivan, olga = (str(dit.account_dn(site, m)) for m in (IVAN, OLGA))

    def write(groups: list[dict]) -> None:
        data = copy.deepcopy(original)
        data["groups"] = groups
        names = {g["name"] for g in groups}
        for folder in data.get("shared_folders", []):
            folder["rights"] = {k: v for k, v in folder["rights"].items()
                                if k in names or "@" in k}
        # a shared folder nobody has rights on any more leaves too (check refuses it)
        data["shared_folders"] = [f for f in data.get("shared_folders", []) if f["rights"]]
        office_lab.site.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                                   encoding="utf-8")

    management = {"name": "management", "members": [IVAN]}
    staff = {"name": "staff", "members": ["management"], "address": TEAM, "post": "site"}
    try:
        # accounting leaves the site, Olga leaves staff
        write([management, staff])
        _apply(office_lab)
        assert office_lab.entry(dn["accounting"])[dit.LOCKED.lower()] == ["TRUE"]
        assert office_lab.entry(dn["staff"])["member"] == [dn["management"]]
        assert dit.ACL_GROUP.lower() not in office_lab.entry(olga)
        assert office_lab.entry(ivan)[dit.ACL_GROUP.lower()] == ["management,staff"]
        assert office_lab.sh(f"postmap -q {TEAM} {TABLE}").strip() == IVAN
        # the list leaves the site: locked, it expands no more
        write([management])
        _apply(office_lab)
        assert office_lab.entry(dn["staff"])[dit.LOCKED.lower()] == ["TRUE"]
        rc = office_lab.mail.exec(["postmap", "-q", TEAM, TABLE], timeout=60)
        assert (rc.returncode, rc.stdout.strip()) == (1, ""), (rc.returncode, rc.stdout)
        assert office_lab.entry(ivan)[dit.ACL_GROUP.lower()] == ["management"]
        # pruned: gone
        _apply(office_lab, prune=True)
        assert office_lab.entry(dn["staff"]) is None
        assert office_lab.entry(dn["accounting"]) is None
    finally:
        office_lab.site.write_text(text, encoding="utf-8")
        _apply(office_lab)
    assert office_lab.entry(dn["staff"])["member"] == [dn["accounting"], dn["management"],
                                                         olga]
    assert office_lab.entry(olga)[dit.ACL_GROUP.lower()] == ["accounting,staff"]
    raw = office_lab.sh(f"postmap -q {TEAM} {TABLE}")
    assert sorted(v.strip() for v in raw.split(",")) == [IVAN, OLGA, OLGA]


def test_a_members_only_list(office_lab) -> None:
    """post: members — a member posts on 587, the probe account (no member) is refused there
    with the list's text, and so is everyone on port 25; the lists part says so, and FAILS
    when the submission services forget the list (the apply in ``finally`` restores it)."""
    text = office_lab.site.read_text(encoding="utf-8")
    assert "    post: site\n" in text
    office_lab.site.write_text(text.replace("    post: site\n", "    post: members\n"),
                               encoding="utf-8")
    try:
        _apply(office_lab)
        checks = office_lab.checks(["lists"])
        assert not _failed(checks), _failed(checks)
        probe = f"probe@{DOMAIN}"
        assert f"587: {probe} (no member) may not post to {TEAM}" in checks
        assert f"port 25: mail from outside to the list {TEAM} (post: members) is refused" \
            in checks
        assert f"587: {OLGA} posts to the list {TEAM}" in checks
        # broken: the submission services forget the list's posters (every login may post)
        restrictions = office_lab.sh("postconf -h mailstack_submission_recipient_restrictions")
        kept = ", ".join(r.strip() for r in restrictions.strip().split(",")
                         if "list_posters" not in r)
        office_lab.sh(f"postconf -e 'mailstack_submission_recipient_restrictions = {kept}' "
                      "&& postfix reload")
        failed = _failed(office_lab.checks(["lists"]))
        print(f"[members-only without list_posters: {failed}]")
        assert f"587: {probe} (no member) may not post to {TEAM}" in failed
    finally:
        office_lab.site.write_text(text, encoding="utf-8")
        _apply(office_lab)
