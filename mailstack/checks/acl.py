"""The ACL: rules parse, no clause is dead, and every lookup can see what it needs.

Evaluated with the model of slapd's access control in ``mailstack.ldap.acl`` against the site's
own entries; ``check --with-daemons`` asks ``slapacl`` the same questions.
"""

from __future__ import annotations

from collections.abc import Iterator

from mailstack.findings import Finding
from mailstack.ldap.acl import Acl, AclError, parse_rule
from mailstack.ldap.dn import dn
from mailstack.plan import acl as policy
from mailstack.plan import dit
from mailstack.site.marks import Path
from mailstack.site.model import Site


def check(site: Site) -> Iterator[Finding]:
    def at(path: Path, message: str, severity: str = "error") -> Finding:
        return Finding(site.marks.at(path), path, message, severity)  # type: ignore[arg-type]

    parse_failed = False
    for i, text in enumerate(site.ldap.acl):
        try:
            parse_rule(text)
        except AclError as e:
            parse_failed = True
            yield at(("ldap", "acl", i), f"cannot read this rule: {e}")
    if parse_failed:
        return
    texts = policy.rules(site)
    model = Acl.parse(texts)
    n_admin = len(site.ldap.acl)

    def where(rule: int) -> Path:
        return ("ldap", "acl", rule - 1) if 1 <= rule <= n_admin else ("ldap", "acl")

    def name(rule: int) -> str:
        return "this rule" if 1 <= rule <= n_admin else f"generated rule {{{rule}}}"

    for rule, clause, earlier in model.dead_clauses():
        r = model.rules[rule]
        yield at(where(rule), f"'{r.by[clause].text}' can never match: '{r.by[earlier].text}' "
                              f"before it in {name(rule)} catches everyone it would")
    for rule, earlier in model.shadowed_rules():
        if 1 <= rule <= n_admin:
            yield at(where(rule), f"this rule never applies: '{model.rules[earlier].text}' "
                                  f"(ldap.acl[{earlier - 1}]) before it catches all it would")
        elif 1 <= earlier <= n_admin and rule == n_admin + 1:
            yield at(where(earlier), "this rule catches every entry and attribute, so none of "
                                     "the generated least-privilege rules after it ever "
                                     "applies (add 'by * break' to let them)", "warning")
    entries = dit.normalized(site)
    reported: set[tuple[str, str, int | None]] = set()
    needed = set(policy.needs(site))
    # the matrix: each class of alike entries asked through its representatives (policy.matrix)
    rows = policy.matrix(site)
    for need in (r for r in rows if r in needed):
        target = dn(need.dn)
        decision = model.decide(dn(need.who) if need.who else None, target, need.attr,
                                entries.get(target))
        if decision.allows(need.access):
            continue
        key = (need.who or "", need.why, decision.rule)
        if key in reported:
            continue
        reported.add(key)
        if decision.rule is None:
            cause = "no rule matches it"
        else:
            r = model.rules[decision.rule]
            clause_text = r.by[decision.clause].text if decision.clause is not None else \
                "the implicit 'by * none'"
            cause = f"'{clause_text}' of {name(decision.rule)} decides"
        yield at(where(decision.rule or 0), f"{need.who} cannot do what {need.why} needs: "
                                            f"{need.access} on {need.attr} of {need.dn} "
                                            f"({cause})")
    for exp in rows:
        if exp.expected or exp in needed:
            continue
        target = dn(exp.dn)
        decision = model.decide(dn(exp.who) if exp.who else None, target, exp.attr,
                                entries.get(target))
        if decision.allows(exp.access) and decision.rule is not None:
            who = exp.who or "anonymous"
            yield at(where(decision.rule), f"{who} may {exp.access} {exp.attr} of {exp.dn}, "
                                           f"which least privilege forbids ({exp.why})",
                     "warning")
