"""The directory's ACL: least-privilege rules derived from the lookups, and their expectations.

Order (first match wins in slapd): root over ldapi may manage (then ``break``; it is the
database's rootDN too), the admin entry (``ldap.root_password``) likewise, the admin's own
rules from the site file, then the generated rules. The generated rules grant each service
account ``search`` on the base of each of its lookups and ``read`` on exactly the entry, filter
and returned attributes below it; users may write their own password (``self write``: ``=w``
breaks a change that presents the old one) and read their own entry; anonymous gets ``auth``.

``expectations`` is the same policy stated as (who, what, access, expected) data; ``check``
evaluates it with the ACL model, and ``check --with-daemons``/``verify`` ask slapacl/slapd.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mailstack.ldap import filter as lf
from mailstack.ldap.dn import DN
from mailstack.ldap.ldif import Entry
from mailstack.plan import dit, layout, topology
from mailstack.plan.memo import per_site
from mailstack.site.model import Site


def _q(d: DN | str) -> str:
    return f'"{d}"'


def root_rule() -> str:
    return f"to * by dn.exact={_q(layout.ROOT_PEERCRED_DN)} manage by * break"


def admin_rule(site: Site) -> str:
    """With ``ldap.root_password``: the admin entry (which tools bind as) manages everything."""
    return f"to * by dn.exact={_q(dit.admin_dn(site))} manage by * break"


def generated_rules(site: Site) -> list[str]:
    """The least-privilege rules, from the lookups as data."""
    base_grants: dict[DN, set[DN]] = defaultdict(set)
    child_grants: dict[DN, dict[str, set[DN]]] = defaultdict(lambda: defaultdict(set))
    for lookup in dit.lookups(site):
        who = dit.service_dn(site, lookup.service)
        base_grants[lookup.base].add(who)
        for attr in ("entry", *sorted(lf.attributes(lookup.filter)), *lookup.returns):
            child_grants[lookup.base][attr].add(who)
        for followed in lookup.follows:
            # the DNs the lookup follows (ldap_table's special_result_attribute): base searches
            # with (objectClass=*) on entries below ``followed``, reading special and leaf
            for attr in ("entry", *dit.followed(lookup)):
                child_grants[followed][attr].add(who)
    people = dit.ou(site, layout.OU_PEOPLE)
    rules = ["to attrs=userPassword by self write by anonymous auth by * none"]
    for container in sorted(base_grants, key=str):
        whos = " ".join(f"by dn.exact={_q(w)} search" for w in sorted(base_grants[container], key=str))
        rules.append(f"to dn.base={_q(container)} attrs=entry {whos} by * none")
        groups: dict[tuple[DN, ...], list[str]] = defaultdict(list)
        for attr, whos_set in child_grants[container].items():
            groups[tuple(sorted(whos_set, key=str))].append(attr)
        for whos_tuple, attrs in sorted(groups.items(), key=lambda kv: [str(w) for w in kv[0]]):
            by = " ".join(f"by dn.exact={_q(w)} read" for w in whos_tuple)
            self_read = " by self read" if container == people else ""
            rules.append(f"to dn.children={_q(container)} attrs={','.join(attrs)} "
                         f"{by}{self_read} by * none")
    rules.append(f"to dn.children={_q(people)} by self read by * none")
    rules.append("to * by * none")
    return rules


def replicator_rule(site: Site) -> str:
    """With replicas: their identity (SASL EXTERNAL, plan/slapd.authz_regexps) reads every
    entry and attribute, userPassword included (without it a replica holds no hashes and its
    users' binds fail with 49; a grant added after the first sync does not backfill)."""
    return f"to * by dn.exact={_q(dit.service_dn(site, 'replicator'))} read by * break"


def rules(site: Site) -> list[str]:
    """The whole olcAccess list of the site's database, in order."""
    admin = [admin_rule(site)] if site.ldap.root_password else []
    replication = [replicator_rule(site)] if topology.replicas(site) else []
    return [root_rule(), *admin, *replication, *site.ldap.acl, *generated_rules(site)]


def frontend_rules() -> list[str]:
    """The root DSE and the schema: for bound users only; anonymous gets nothing."""
    return ['to dn.base="" by users read by * none',
            'to dn.base="cn=Subschema" by users read by * none']


@dataclass(frozen=True)
class Expectation:
    """One line of the access matrix: who (None: anonymous) may or may not do what."""

    who: str | None
    dn: str
    attr: str
    access: str
    expected: bool
    why: str


class _Alike:
    """Classes of entries the ACL decides alike (see :func:`matrix`), and how many of each
    class a lookup has been shown so far."""

    def __init__(self, site: Site, lowered: Mapping[DN, lf.Normalized]) -> None:
        from mailstack.ldap.acl import Acl

        chosen = Acl.parse(rules(site)).classify(lowered)
        self.key = {d: (chosen[d], frozenset(low), low.get("objectclass"))
                    for d, low in lowered.items()}
        self.shown: dict[tuple[object, ...], int] = {}
        # every entry under each of its ancestors, in the DIT's order: a lookup walks only
        # the entries below its base
        self.under: dict[tuple[object, ...], list[DN]] = defaultdict(list)
        for d in lowered:
            key = d.key()
            for depth in range(1, len(key)):
                self.under[key[depth:]].append(d)

        self.order = {d: i for i, d in enumerate(lowered)}
        self.by_text = {str(d).lower(): d for d in lowered}
        self._kinds: dict[tuple[object, ...], list[list[DN]]] = {}

    def below(self, base: DN) -> list[DN]:
        """The entries strictly below ``base``."""
        return self.under.get(base.key(), [])

    def kinds_below(self, base: DN) -> list[list[DN]]:
        """The entries strictly below ``base`` by class, each class in the DIT's order (asked
        once per base: several lookups search one ou)."""
        found = self._kinds.get(base.key())
        if found is None:
            groups: dict[tuple[object, ...], list[DN]] = {}
            for d in self.below(base):
                groups.setdefault(self.key[d], []).append(d)
            found = self._kinds[base.key()] = list(groups.values())
        return found

    def candidates(self, base: DN, who: DN, wanted: Callable[[DN], bool]) -> list[DN]:
        """The entries below ``base`` a lookup is shown, in the DIT's order: of each class
        that ``wanted`` accepts (it tests what the class shares, e.g. object classes), the
        first :data:`REPRESENTATIVES`, and ``who`` itself wherever it is."""
        out: list[DN] = []
        for members in self.kinds_below(base):
            if wanted(members[0]):
                out += members[:REPRESENTATIVES]
                out += [d for d in members[REPRESENTATIVES:] if d == who]
        return sorted(out, key=self.order.__getitem__)

    def show(self, why: str, who: DN, entry_dn: DN) -> bool:
        """Whether ``entry_dn`` is among the first representatives of its class for ``why``
        (an entry asked about itself always is)."""
        if entry_dn == who:
            return True
        key = (why, self.key[entry_dn])
        n = self.shown.get(key, 0)
        if n >= REPRESENTATIVES:
            return False
        self.shown[key] = n + 1
        return True


@per_site
def needs(site: Site) -> tuple[Expectation, ...]:
    """What each service account's lookups need on the site's own entries: on every entry
    the lookup finds, or, of entries the ACL decides alike, on the first
    :data:`REPRESENTATIVES` (:func:`matrix` says why that proves the same)."""
    out: list[Expectation] = []
    entries = {e.dn: e for e in dit.entries(site)}
    lowered = dit.normalized(site)
    alike = _Alike(site, lowered)
    for lookup in dit.lookups(site):
        who_dn = dit.service_dn(site, lookup.service)
        who = str(who_dn)
        why = f"{lookup.service}'s lookup {lookup.name}"
        out.append(Expectation(who, str(lookup.base), "entry", "search", True, why))
        asserts = _class_asserts(lookup.filter)
        searched = sorted(lf.attributes(lookup.filter))
        def classes_match(entry_dn: DN, asserts: list[lf.Filter] = asserts) -> bool:
            return all(lf.matches(p, lowered[entry_dn]) for p in asserts)

        for entry_dn in alike.candidates(lookup.base, who_dn, classes_match):
            target = str(entry_dn)
            for attr in searched:
                out.append(Expectation(who, target, attr, "search", True, why))
            out.append(Expectation(who, target, "entry", "read", True, why))
            for attr in lookup.returns:
                out.append(Expectation(who, target, attr, "read", True, why))
        out += _follow_needs(lookup, entries, lowered, alike, who_dn, f"{why} (followed)")
    return tuple(out)


def _follow_needs(lookup: dit.Lookup, entries: dict[DN, Entry],
                  lowered: Mapping[DN, lf.Normalized], alike: _Alike, who_dn: DN,
                  why: str) -> list[Expectation]:
    """What following the lookup's special DNs needs on each entry they name: the entry and
    (objectClass=*) searched, the special and leaf attributes read."""
    out: list[Expectation] = []
    if not lookup.special:
        return out
    who = str(who_dn)
    named = {alike.by_text[v] for d in alike.below(lookup.base)
             for a in lookup.special for v in lowered[d].get(a.lower(), ())
             if v in alike.by_text}
    for entry_dn in sorted(named, key=alike.order.__getitem__):
        entry = entries[entry_dn]
        if not alike.show(why, who_dn, entry.dn):
            continue
        target = str(entry.dn)
        out.append(Expectation(who, target, "entry", "read", True, why))
        out.append(Expectation(who, target, "objectClass", "search", True, why))
        have = entry.as_dict()
        for attr in (*lookup.special, *lookup.leaf):
            if attr in have:
                out.append(Expectation(who, target, attr, "read", True, why))
    return out


def _class_asserts(f: lf.Filter) -> list[lf.Filter]:
    if isinstance(f, lf.Eq) and f.attr.lower() == "objectclass":
        return [f]
    if isinstance(f, lf.And):
        return [p for part in f.parts for p in _class_asserts(part)]
    return []


REPRESENTATIVES = 2
"""Entries kept per class in the matrix: more than one, so a rule that singles out one entry
by accident (a DN or filter that names it) still shows against its neighbour."""


@per_site
def matrix(site: Site) -> tuple[Expectation, ...]:
    """The expectations slapacl is asked (acl-expectations.json) and the check decides: every
    row of :func:`expectations`, except that entries alike for the ACL stand for each other.

    Two entries are alike when the same rules select them (the <what> DN and filter of each
    rule, with the site's own rules in front: :meth:`Acl.rules_for`) and they have the same
    attribute names: then slapd decides every attribute of both alike, for anyone but the entry
    itself. So each (who, attribute, access, expected, why, class of entry) keeps its first
    :data:`REPRESENTATIVES` entries, and rows whose subject is the entry itself all stay. The
    matrix grows with the site's lookups and kinds of entries, not with its accounts: at
    10,000 accounts it is a few hundred rows, not 170,000 (and verify's slapacl run as short).
    """
    from mailstack.ldap.acl import Acl
    from mailstack.ldap.dn import dn

    model = Acl.parse(rules(site))
    entries = {str(d).lower(): (d, low) for d, low in dit.normalized(site).items()}
    kept: dict[tuple[object, ...], int] = {}
    out: list[Expectation] = []
    for exp in expectations(site):
        found = entries.get(exp.dn.lower())
        if found is None or (exp.who is not None and dn(exp.who) == found[0]):
            out.append(exp)
            continue
        entry_dn, lower = found
        key = (exp.who, exp.attr.lower(), exp.access, exp.expected, exp.why,
               model.rules_for(entry_dn, lower), frozenset(lower))
        n = kept.get(key, 0)
        if n < REPRESENTATIVES:
            kept[key] = n + 1
            out.append(exp)
    return tuple(out)


def expectations(site: Site) -> list[Expectation]:
    """The access matrix kept beside the ACL: what must be allowed and what must be denied."""
    out = list(needs(site))
    services = [str(dit.service_dn(site, s)) for s in layout.SERVICE_ACCOUNTS]
    accounts = [str(dit.account_dn(site, a.mail)) for a in site.accounts]
    for target in accounts[:2]:
        out.append(Expectation(None, target, "userPassword", "auth", True, "anonymous binds"))
        out.append(Expectation(None, target, "entry", "read", False, "anonymous reads nothing"))
        out.append(Expectation(None, target, "mail", "search", False, "anonymous searches nothing"))
        out.append(Expectation(target, target, "userPassword", "write", True,
                               "a user changes his own password"))
        out.append(Expectation(target, target, "userPassword", "auth", True,
                               "RFC 3062 with the old password checks it as the user "
                               "(self =w refuses: unwilling to verify old password)"))
        for svc in services:
            out.append(Expectation(svc, target, "userPassword", "read", False,
                                   "services bind as the user; they never read passwords"))
            out.append(Expectation(svc, target, "mail", "write", False, "services only read"))
    if len(accounts) >= 2:
        out.append(Expectation(accounts[0], accounts[1], "userPassword", "read", False,
                               "a user cannot read another user's password"))
        out.append(Expectation(accounts[0], accounts[1], "userPassword", "write", False,
                               "a user cannot change another user's password"))
    out.append(Expectation(None, str(dit.base(site)), "entry", "read", False,
                           "anonymous reads nothing"))
    policy = str(dit.policy_dn(site))
    for who in (None, *services, *accounts[:1]):
        out.append(Expectation(who, policy, "entry", "read", False,
                               "ppolicy reads its policy itself; no one else needs it"))
        out.append(Expectation(who, policy, "pwdMinLength", "write", False,
                               "only root changes the password policy"))
    if site.ldap.root_password and accounts:
        admin = str(dit.admin_dn(site))
        out.append(Expectation(admin, accounts[0], "userPassword", "manage", True,
                               "the admin entry (ldap.root_password) manages the directory"))
        out.append(Expectation(accounts[0], admin, "userPassword", "read", False,
                               "no user reads the admin's password"))
    return out
