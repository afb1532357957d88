"""Groups and distribution lists: the site's checks, the directory entries, Postfix's tables."""

from __future__ import annotations

import dataclasses

from mailstack import checks
from mailstack.ldap import filter as lf
from mailstack.plan import acl, dit, postfix
from mailstack.secrets import SecretStore
from mailstack.site.load import load_site
from tests.unit.test_site_checks import GOOD

DOMAIN = "krasnoyarsk.example.org"
IVAN, OLGA = f"ivan@{DOMAIN}", f"olga@{DOMAIN}"


def _errors(write_site, groups: str, extra: str = "") -> list[str]:
    path = write_site(GOOD + extra + "groups:\n" + groups)
    site = load_site(path)
    return [str(f).replace(str(path), "site.yml")
            for f in checks.run(site, SecretStore(path.parent / "secrets"))]


def _site(write_site, groups: str):
    return load_site(write_site(GOOD + "groups:\n" + groups))


LISTS = f"""\
  - {{name: accounting, members: [{OLGA}]}}
  - {{name: management, members: [{IVAN}]}}
  - {{name: staff, members: [accounting, management, {OLGA}], address: team@{DOMAIN},
     post: members, send_as: [management]}}
"""


def test_a_good_list_is_clean(write_site) -> None:
    assert _errors(write_site, LISTS) == []


def test_unknown_members_cycles_and_names(write_site) -> None:
    found = _errors(write_site, f"""\
  - {{name: a, members: [b, olga@{DOMAIN}]}}
  - {{name: b, members: [a, acounting]}}
  - {{name: a, members: [ivna@{DOMAIN}]}}
  - {{name: accounting, members: [olga@{DOMAIN}, olga@{DOMAIN}], send_as: [a]}}
  - {{name: empty, members: []}}
""")
    assert found == [
        "site.yml:14: groups[0].members: group 'a' contains itself (a -> b -> a)",
        "site.yml:15: groups[1].members: group 'b' contains itself (b -> a -> b)",
        "site.yml:15: groups[1].members[1]: 'acounting' is no account or group of the site "
        "(members); did you mean 'accounting'?",
        f"site.yml:16: groups[2].members[0]: 'ivna@{DOMAIN}' is no account or group of the site "
        f"(members); did you mean '{IVAN}'?",
        "site.yml:16: groups[2].name: duplicate group 'a' (first used at line 14)",
        f"site.yml:17: groups[3].members[1]: '{OLGA}' is listed twice",
        "site.yml:17: groups[3].send_as: only a group with an address (a list) can be sent as: "
        "add an address or remove send_as",
        "site.yml:18: groups[4].members: a group needs at least one member (groupOfNames "
        "requires one)",
    ]


def test_a_list_address_must_be_local_and_free(write_site) -> None:
    found = _errors(write_site, f"""\
  - {{name: a, members: [{OLGA}], address: postmaster@{DOMAIN}}}
  - {{name: b, members: [{OLGA}], address: team@elsewhere.example}}
  - {{name: c, members: [{OLGA}], address: office@{DOMAIN}}}
  - {{name: d, members: [{OLGA}], address: OFFICE@{DOMAIN}, post: anyone}}
  - {{name: e, members: [{OLGA}], post: members}}
""", extra=f"aliases:\n  - {{address: office2@{DOMAIN}, to: [{OLGA}]}}\n")
    assert found == [
        f"site.yml:16: groups[0].address: 'postmaster@{DOMAIN}' is already an alias of {IVAN}",
        "site.yml:17: groups[1].address: 'team@elsewhere.example' is not in one of the site's "
        f"domains ({DOMAIN})",
        f"site.yml:19: groups[3].address: 'OFFICE@{DOMAIN}' is already group c's address",
        "site.yml:20: groups[4].post: only a group with an address (a list) takes postings: "
        "add an address or remove post",
    ]


def test_group_entries_members_and_acl_groups(write_site) -> None:
    site = _site(write_site, LISTS)
    by_dn = {str(e.dn): e.as_dict() for e in dit.entries(site)}
    groups = str(dit.ou(site, "groups"))
    assert by_dn[groups]["objectClass"] == ["organizationalUnit"]
    staff = by_dn[str(dit.group_dn(site, "staff"))]
    assert staff["objectClass"] == ["groupOfNames", "inetLocalMailRecipient", "mailstackEntry"]
    assert staff["mailLocalAddress"] == [f"team@{DOMAIN}"]
    assert staff["member"] == [str(dit.group_dn(site, "accounting")),
                               str(dit.group_dn(site, "management")),
                               str(dit.account_dn(site, OLGA))]
    order = [str(e.dn) for e in dit.entries(site)]
    assert order.index(str(dit.group_dn(site, "accounting"))) < order.index(str(dit.group_dn(site, "staff")))
    olga = by_dn[str(dit.account_dn(site, OLGA))]
    assert olga[dit.ACL_GROUP] == ["accounting,staff"]   # one value: Dovecot reads the first only
    assert dit.ACL_GROUP in dit.SITE_OWNED
    assert {"member", "mailLocalAddress"} <= set(dit.owned_attributes(site))
    assert str(dit.ou(site, "groups")) in dit.reconcile_facts(site)["bases"]


def test_the_list_table_expands_nested_groups_once(write_site) -> None:
    site = _site(write_site, LISTS)
    settings = postfix.ldap_table(site, "virtual_alias_groups", "ldapi:///", "pw")
    assert settings["query_filter"] == \
        "(&(objectClass=groupOfNames)(mailLocalAddress=%s)(!(mailstackLocked=TRUE)))"
    assert settings["special_result_attribute"] == "member"
    assert settings["leaf_result_attribute"] == "mail"
    assert settings["result_attribute"] == ""
    assert postfix.table_answer(site, "virtual_alias_groups", f"team@{DOMAIN}") == {IVAN, OLGA}
    assert postfix.table_answer(site, "virtual_alias_groups", f"nobody@{DOMAIN}") == set()
    main = postfix.main_cf(site, "mail")
    groups = postfix.table("virtual_alias_groups")
    assert main["virtual_alias_maps"] == (
        f"{postfix.table('virtual_alias_maps')}, "
        f"pipemap:{{texthash:{postfix.LIST_ADDRESSES}, {groups}}}")
    assert groups in main["proxy_read_maps"].split()
    assert postfix.list_addresses(site) == [(f"team@{DOMAIN}", f"team@{DOMAIN}")]


def test_in_directory_mode_every_address_asks_the_lists_table(write_site) -> None:
    site = _site(write_site, LISTS)
    site = dataclasses.replace(site, ldap=dataclasses.replace(site.ldap, accounts="directory"))
    main = postfix.main_cf(site, "mail")
    assert main["virtual_alias_maps"] == ", ".join(
        postfix.table(n) for n in ("virtual_alias_maps", "virtual_alias_groups"))
    assert postfix.list_addresses(site) == []   # and so no file of them is rendered


def test_a_site_without_lists_keeps_one_alias_table(write_site) -> None:
    site = _site(write_site, f"  - {{name: a, members: [{OLGA}]}}\n")
    main = postfix.main_cf(site, "mail")
    assert main["virtual_alias_maps"] == postfix.table("virtual_alias_maps")
    assert "smtpd_restriction_classes" not in main
    assert "list_refusals" not in main["smtpd_recipient_restrictions"]


def test_the_acl_gives_postfix_what_following_members_needs(write_site) -> None:
    site = _site(write_site, LISTS)
    post = f'"{dit.service_dn(site, "postfix")}"'
    rules = acl.generated_rules(site)
    groups, people = dit.ou(site, "groups"), dit.ou(site, "people")
    assert f'to dn.base="{groups}" attrs=entry by dn.exact={post} search by * none' in rules
    grants = [r for r in rules if r.startswith(f'to dn.children="{groups}"')]
    assert grants == [f'to dn.children="{groups}" attrs=entry,mailLocalAddress,mailstackLocked,'
                      f'objectClass,member,mail by dn.exact={post} read by * none']
    needs = {(e.who, e.dn, e.attr, e.access) for e in acl.needs(site)}
    olga = str(dit.account_dn(site, OLGA))
    for attr, access in (("entry", "read"), ("objectClass", "search"), ("mail", "read")):
        assert (post.strip('"'), olga, attr, access) in needs
    assert (post.strip('"'), str(dit.group_dn(site, "accounting")), "member", "read") in needs
    assert any(str(people) in r and "mail" in r for r in rules)


def test_posting_policy_tables(write_site) -> None:
    site = _site(write_site, LISTS.replace("post: members", "post: members") + f"""\
  - {{name: open, members: [{IVAN}], address: open@{DOMAIN}, post: anyone}}
  - {{name: inside, members: [{IVAN}], address: inside@{DOMAIN}}}
""")
    assert postfix.list_refusals(site) == [
        (f"inside@{DOMAIN}", postfix.LIST_REFUSED["site"]),
        (f"team@{DOMAIN}", "REJECT 5.7.1 only members may post to this list")]
    assert postfix.list_posters(site) == [(f"team@{DOMAIN}", "mailstack_list_staff")]
    main = postfix.main_cf(site, "mail")
    assert main["smtpd_restriction_classes"] == "mailstack_list_staff"
    assert main["mailstack_list_staff"] == (
        "check_sasl_access texthash:/etc/postfix/list_members/staff, "
        "check_recipient_access texthash:/etc/postfix/list_refusals")
    assert main["mailstack_submission_recipient_restrictions"].endswith(
        "check_recipient_access texthash:/etc/postfix/list_posters")
    assert main["smtpd_recipient_restrictions"].endswith(
        "reject_unlisted_recipient, check_recipient_access texthash:/etc/postfix/list_refusals")
    files = {f.path: f for f in postfix.files(site, "mail", "ldapi:///",
                                              {"ldap/postfix": "pw"})}
    assert files["/etc/postfix/list_members/staff"].data["rows"] == [(OLGA, "OK"), (IVAN, "OK")]
    assert "/etc/postfix/list_members/inside" not in files
    assert postfix.list_class("a.b-c_d") == "mailstack_list_a_db_hc__d"


def test_send_as_a_list_goes_to_the_sender_login_map(write_site) -> None:
    site = _site(write_site, LISTS)
    assert postfix.sender_login_extra(site) == [(f"team@{DOMAIN}", IVAN)]
    assert postfix.main_cf(site, "mail")["smtpd_sender_login_maps"].endswith(
        f"texthash:{postfix.SENDER_LOGIN_EXTRA}")
    both = dataclasses.replace(site, groups=tuple(
        dataclasses.replace(g, send_as=("staff",)) if g.name == "staff" else g
        for g in site.groups))
    assert postfix.sender_login_extra(both) == [(f"team@{DOMAIN}", f"{OLGA}, {IVAN}")]


def test_a_locked_group_stops_expanding(write_site) -> None:
    site = _site(write_site, LISTS)
    lookup = {lk.name: lk for lk in dit.lookups(site)}["virtual_alias_groups"]
    staff = next(e for e in dit.entries(site) if e.dn == dit.group_dn(site, "staff")).as_dict()
    query = lf.substitute(lookup.filter, f"team@{DOMAIN}")
    assert lf.matches(query, staff)
    assert not lf.matches(query, {**staff, dit.LOCKED: ["TRUE"]})
