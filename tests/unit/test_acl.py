"""The slapd ACL model and the generated least-privilege ACL."""

from __future__ import annotations

import pytest

from mailstack.ldap.acl import Acl, AclError, parse_rule
from mailstack.ldap.dn import dn
from mailstack.plan import acl as policy
from mailstack.site.load import load_site

BASE = "dc=krasnoyarsk,dc=example,dc=org"
DOVECOT = dn(f"cn=dovecot,ou=applications,{BASE}")
POSTFIX = dn(f"cn=postfix,ou=applications,{BASE}")
IVAN = dn(f"mail=ivan@krasnoyarsk.example.org,ou=people,{BASE}")
OLGA = dn(f"mail=olga@krasnoyarsk.example.org,ou=people,{BASE}")


def test_first_matching_clause_decides_and_by_star_none_stops() -> None:
    acl = Acl.parse([f'to * by dn="cn=admin,{BASE}" write by dn.exact="{DOVECOT}" read '
                     "by * none by * read"])
    assert acl.decide(DOVECOT, IVAN, "mail").allows("read")
    assert not acl.decide(DOVECOT, IVAN, "mail").allows("write")
    decision = acl.decide(POSTFIX, IVAN, "mail")
    assert not decision.allows("search") and (decision.rule, decision.clause) == (0, 2)
    assert acl.dead_clauses() == [(0, 3, 2)]


def test_break_continue_and_privilege_sets() -> None:
    acl = Acl.parse([
        "to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage "
        "by * break",
        "to attrs=userPassword by self =xw by anonymous auth by * none",
        f"to dn.subtree={BASE} by users +r continue by self +w",
    ])
    assert acl.decide(None, IVAN, "userPassword").allows("auth")
    assert not acl.decide(None, IVAN, "userPassword").allows("read")
    own = acl.decide(IVAN, IVAN, "userPassword")
    assert own.allows("w") and own.allows("x") and not own.allows("read")
    # continue: users get r, then self adds w to it; another user keeps only r -> implicit none
    assert acl.decide(IVAN, IVAN, "cn").privs >= {"r", "w"}
    assert acl.decide(OLGA, IVAN, "cn").privs == frozenset()
    root = dn("gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth")
    assert acl.decide(root, IVAN, "userPassword").allows("manage")


def test_who_and_what_coverage() -> None:
    acl = Acl.parse([
        f"to dn.subtree=ou=people,{BASE} by users read by self write",
        f"to dn.children=ou=people,{BASE} attrs=mail by * none",
        f'to dn.subtree="{BASE}" by dn.subtree="ou=applications,{BASE}" read '
        f'by dn.exact="{DOVECOT}" write',
    ])
    assert acl.dead_clauses() == [(0, 1, 0), (2, 1, 0)]
    assert acl.shadowed_rules() == [(1, 0)]


@pytest.mark.parametrize(("text", "message"), [
    ("by * read", "a rule starts with 'to'"),
    ("to *", "a rule needs at least one 'by' clause"),
    ("to * by * reed", "'reed' is not an access level"),
    ('to dn.exact="cn=a,,dc=x" by * read', "'cn=a,,dc=x' is not a valid DN: ',dc' is not an "
                                           "attribute type"),
    ("to dn.fuzzy=x by * read", "unknown DN style 'fuzzy' in 'dn.fuzzy=x'"),
    ('to * by dn="cn=a by * read', "an opening quote is never closed"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(AclError) as err:
        parse_rule(text)
    assert str(err.value) == message


def test_generated_acl_grants_lookups_and_nothing_more(example) -> None:
    site = load_site(example)
    acl = Acl.parse(policy.rules(site))
    assert acl.dead_clauses() == [] and acl.shadowed_rules() == []
    for need in policy.needs(site):
        assert acl.decide(dn(need.who), dn(need.dn), need.attr).allows(need.access), need
    for exp in policy.expectations(site):
        got = acl.decide(dn(exp.who) if exp.who else None, dn(exp.dn), exp.attr).allows(exp.access)
        assert got == exp.expected, exp
    # dovecot never reads a password: it binds as the user
    assert not acl.decide(DOVECOT, IVAN, "userPassword").allows("read")
    # postfix reads no homes; dovecot reads no maildrop targets
    assert not acl.decide(POSTFIX, IVAN, "homeDirectory").allows("read")
    alias = dn(f"mail=office@krasnoyarsk.example.org,ou=aliases,{BASE}")
    assert not acl.decide(DOVECOT, alias, "maildrop").allows("read")
    assert acl.decide(POSTFIX, alias, "maildrop").allows("read")
    # nobody writes but the root over ldapi and the user on his own password
    assert not acl.decide(IVAN, IVAN, "mail").allows("write")


def test_generated_rules_are_exact(example) -> None:
    rules = policy.generated_rules(load_site(example))
    assert rules[0] == "to attrs=userPassword by self write by anonymous auth by * none"
    assert rules[-1] == "to * by * none"
    # Postfix's domain table is static (from the site file): it reads nothing of ou=domains
    assert not [r for r in rules if f"ou=domains,{BASE}" in r and POSTFIX in r]
    assert "=w" not in " ".join(rules)


def _grown(example, n: int):
    """The example with ``n`` more accounts, every fifth locked, half of them in a group."""
    from tests.conftest import example_text

    text = example_text()
    extra = "".join(f"  - {{mail: u{i}@krasnoyarsk.example.org, name: U {i}"
                    f"{', enabled: false' if i % 5 == 0 else ''}}}\n" for i in range(n))
    text = text.replace("\naccounts:\n", "\naccounts:\n" + extra, 1)
    members = ", ".join(f"u{i}@krasnoyarsk.example.org" for i in range(0, n, 2))
    text = text.replace("\ngroups:\n", f"\ngroups:\n  - {{name: many, members: [{members}]}}\n",
                        1)
    example.write_text(text, encoding="utf-8")
    return load_site(example)


def test_classify_asks_each_kind_once_and_agrees_with_every_entry(example) -> None:
    from mailstack.plan import dit

    site = _grown(example, 30)
    model = Acl.parse(policy.rules(site))
    lowered = dit.normalized(site)
    assert model.classify(lowered) == {d: model.rules_for(d, low) for d, low in lowered.items()}


def test_the_matrix_keeps_a_class_of_alike_entries_through_two_of_them(example, monkeypatch
                                                                       ) -> None:
    """Every entry of a class is decided as its representatives are: the reduction loses
    nothing slapacl or the check would have found."""
    from mailstack.plan import dit

    site = _grown(example, 30)
    monkeypatch.setattr(policy, "REPRESENTATIVES", 10**9)
    full = policy.needs.__wrapped__(site)  # type: ignore[attr-defined]
    monkeypatch.undo()
    kept = policy.needs.__wrapped__(site)  # type: ignore[attr-defined]
    assert len(kept) < len(full) / 3
    assert set(kept) <= set(full)
    model = Acl.parse(policy.rules(site))
    lowered = dit.normalized(site)
    kinds = model.classify(lowered)
    by_dn = {str(d).lower(): d for d in lowered}
    decided: dict[tuple[object, ...], set[bool]] = {}
    for row in full:
        target = by_dn.get(row.dn.lower())
        if target is None:
            continue
        key = (row.who, row.attr.lower(), row.access, row.why, kinds[target],
               frozenset(lowered[target]))
        allowed = model.decide(dn(row.who) if row.who else None, target, row.attr,
                               lowered[target]).allows(row.access)
        decided.setdefault(key, set()).add(allowed)
    assert decided and all(len(v) == 1 for v in decided.values())
    # and the matrix does not grow with the accounts
    rows = len(policy.matrix(site))
    assert rows == len(policy.matrix(_grown(example, 60)))
