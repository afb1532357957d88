"""A model of slapd's access control (slapd.access(5)): parse olcAccess rules and evaluate them.

The model covers what mailstack's checks need: ``to`` clauses on ``*``, DN scopes, ``attrs=``
and ``filter=``; ``by`` clauses on ``*``, ``anonymous``, ``users``, ``self`` and DN scopes; access
levels and ``=``/``+``/``-`` privilege sets; the ``stop``/``continue``/``break`` controls. A who
it does not model (``group=``, ``peername=``, ``set=``...) is kept as *unknown*: it never counts
as catching everything, and it never matches in an evaluation. ``slapacl`` settles disagreements.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from mailstack.ldap import filter as lf
from mailstack.ldap.dn import DN, DNError, dn

PRIVS = "dxcsrwm"   # disclose, auth, compare, search, read, write, manage (write covers add/delete)
LEVELS = {
    "none": "", "disclose": "d", "auth": "dx", "compare": "dxc", "search": "dxcs",
    "read": "dxcsr", "write": "dxcsrw", "add": "dxcsrw", "delete": "dxcsrw", "manage": "dxcsrwm",
}
Scope = Literal["base", "one", "subtree", "children", "regex"]
Control = Literal["stop", "continue", "break"]


class AclError(ValueError):
    """A rule cannot be parsed; the message says where."""


@dataclass(frozen=True)
class DnMatch:
    scope: Scope
    value: str              # a DN (normalised via DN) or a regex

    @cached_property
    def ref(self) -> DN:
        return dn(self.value)

    def matches(self, target: DN) -> bool:
        if self.scope == "regex":
            return re.fullmatch(self.value, str(target), re.IGNORECASE) is not None
        ref = self.ref
        if self.scope == "base":
            return target == ref
        if self.scope == "one":
            return bool(target.rdns) and target.parent == ref
        if self.scope == "subtree":
            return target.is_within(ref)
        return target.is_below(ref)

    def covers(self, other: DnMatch) -> bool:
        """Every DN ``other`` matches is matched by this one."""
        if self.scope == "regex" or other.scope == "regex":
            return self == other
        mine, theirs = dn(self.value), dn(other.value)
        if other.scope == "base":
            return self.matches(theirs)
        if self.scope == "subtree":
            return theirs.is_within(mine)
        if self.scope == "children":
            return theirs.is_below(mine) or (other.scope in ("one", "children")
                                             and theirs.is_within(mine))
        if self.scope == "one":
            return other.scope == "one" and theirs == mine
        return False


@dataclass(frozen=True)
class What:
    dn: DnMatch | None = None
    attrs: tuple[str, ...] | None = None      # None: every attribute
    filter: lf.Filter | None = None

    @cached_property
    def attr_set(self) -> frozenset[str] | None:
        return None if self.attrs is None else frozenset(a.lower() for a in self.attrs)

    def matches(self, entry_dn: DN, attr: str,
                entry: dict[str, list[str]] | lf.Normalized | None) -> bool:
        attrs = self.attr_set
        if attrs is not None and attr.lower() not in attrs:
            return False
        return self.matches_entry(entry_dn, entry)

    def matches_entry(self, entry_dn: DN,
                      entry: dict[str, list[str]] | lf.Normalized | None) -> bool:
        """The DN and the filter match (the attribute aside)."""
        if self.dn and not self.dn.matches(entry_dn):
            return False
        return not (self.filter is not None and entry is not None
                    and not lf.matches(self.filter, entry))

    def covers(self, other: What) -> bool:
        if self.filter is not None:
            return False
        if self.dn and not (other.dn and self.dn.covers(other.dn)):
            return False
        if self.attrs is None:
            return True
        return other.attrs is not None and {a.lower() for a in other.attrs} <= {
            a.lower() for a in self.attrs}


@dataclass(frozen=True)
class Who:
    kind: Literal["*", "anonymous", "users", "self", "dn", "unknown"]
    dn: DnMatch | None = None
    text: str = ""

    def matches(self, who: DN | None, entry_dn: DN) -> bool:
        if self.kind == "*":
            return True
        if self.kind == "anonymous":
            return who is None
        if self.kind == "users":
            return who is not None
        if self.kind == "self":
            return who is not None and who == entry_dn
        if self.kind == "dn":
            return who is not None and self.dn is not None and self.dn.matches(who)
        return False

    def covers(self, other: Who) -> bool:
        if self.kind == "*":
            return True
        if self.kind == "unknown" or other.kind == "unknown":
            return False
        if self.kind == "users":
            return other.kind in ("users", "self", "dn")
        if self.kind in ("anonymous", "self"):
            return other.kind == self.kind
        return other.kind == "dn" and self.dn is not None and other.dn is not None \
            and self.dn.covers(other.dn)


@dataclass(frozen=True)
class By:
    who: Who
    op: Literal["=", "+", "-"]
    privs: str
    control: Control
    text: str

    def apply(self, current: set[str]) -> set[str]:
        if self.op == "+":
            return current | set(self.privs)
        if self.op == "-":
            return current - set(self.privs)
        return set(self.privs)


@dataclass(frozen=True)
class Rule:
    what: What
    by: tuple[By, ...]
    text: str


@dataclass(frozen=True)
class Decision:
    privs: frozenset[str]
    rule: int | None            # index of the rule that decided, None: no rule matched
    clause: int | None          # index of its by clause, None: the implicit "by * none"

    def allows(self, level: str) -> bool:
        return set(LEVELS[level]) <= self.privs if level in LEVELS else level in self.privs


def _tokens(text: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            if cur:
                out.append(cur)
            cur = ""
            continue
        else:
            cur += ch
    if quoted:
        raise AclError("an opening quote is never closed")
    if cur:
        out.append(cur)
    return out


def _dnmatch(key: str, value: str, *, who: bool) -> DnMatch:
    style = key.split(".", 1)[1] if "." in key else ""
    style = style.split(",", 1)[0]
    scope = {"": "", "base": "base", "baseobject": "base", "exact": "base", "one": "one",
             "onelevel": "one", "sub": "subtree", "subtree": "subtree", "children": "children",
             "regex": "regex"}.get(style)
    if scope is None:
        raise AclError(f"unknown DN style '{style}' in '{key}={value}'")
    if scope == "":
        # slapd's default style is regex; a plain DN (no regex characters) matches exactly itself
        scope = "base" if not re.search(r"[*+?\[\]()|^$\\]", value) else "regex"
    if scope != "regex":
        try:
            dn(value)
        except DNError as err:
            raise AclError(f"'{value}' is not a valid DN: {err}") from None
    return DnMatch(scope, value)  # type: ignore[arg-type]


def _parse_what(tokens: list[str]) -> What:
    dnm, attrs, flt = None, None, None
    for tok in tokens:
        key, _, value = tok.partition("=")
        if tok == "*":
            continue
        if key == "dn" or key.startswith("dn."):
            dnm = _dnmatch(key, value, who=False)
        elif key in ("attrs", "attr"):
            attrs = tuple(a for a in value.split(",") if a)
        elif key == "filter":
            try:
                flt = lf.parse(value)
            except ValueError as err:
                raise AclError(f"cannot read filter '{value}': {err}") from None
        elif key.startswith("val"):
            continue
        else:
            raise AclError(f"unknown selector '{tok}' in the 'to' part")
    return What(dnm, attrs, flt)


def _parse_who(tok: str) -> Who:
    if tok in ("*", "anonymous", "users", "self"):
        return Who(tok, text=tok)  # type: ignore[arg-type]
    key, _, value = tok.partition("=")
    if key == "dn" or key.startswith("dn."):
        if value == "*" or (key == "dn.regex" and value in (".*", ".+")):
            return Who("*" if value == "*" else "users", text=tok)
        return Who("dn", _dnmatch(key, value, who=True), text=tok)
    return Who("unknown", text=tok)


def _parse_access(tok: str) -> tuple[str, str] | None:
    t = tok[4:] if tok.startswith("self") and tok[4:] in LEVELS else tok
    if t in LEVELS:
        return "=", LEVELS[t]
    if t and t[0] in "=+-" and set(t[1:]) <= set(PRIVS + "0azx"):
        privs = "".join(sorted({"a": "w", "z": "w"}.get(c, c) for c in t[1:] if c != "0"))
        return t[0], privs
    return None


def parse_rule(text: str) -> Rule:
    """Parse one rule, in olcAccess form (``to ... by ...``), optionally with ``{N}``/``access``."""
    body = re.sub(r"^\{\d+\}", "", text.strip())
    if body.startswith("access "):
        body = body[len("access "):]
    toks = _tokens(body)
    if not toks or toks[0] != "to":
        raise AclError("a rule starts with 'to'")
    if "by" not in toks:
        raise AclError("a rule needs at least one 'by' clause")
    first_by = toks.index("by")
    what_toks = toks[1:first_by]
    if not what_toks:
        raise AclError("'to' needs a target such as * or dn.subtree=...")
    what = _parse_what(what_toks)
    clauses: list[By] = []
    i = first_by
    while i < len(toks):
        if toks[i] != "by":
            raise AclError(f"expected 'by', found '{toks[i]}'")
        j = i + 1
        while j < len(toks) and toks[j] != "by":
            j += 1
        part = toks[i + 1:j]
        if not part:
            raise AclError("'by' needs a who")
        # a who may have several selectors (dn=... ssf=...): the last words are access/control
        control: Control = "stop"
        if part[-1] in ("stop", "continue", "break"):
            control = part.pop()  # type: ignore[assignment]
        access = _parse_access(part[-1]) if len(part) > 1 else None
        if access:
            part.pop()
        op, privs = access or ("=", LEVELS["read"] if len(part) == 1 and not access else "")
        if access is None and len(part) > 1:
            raise AclError(f"'{part[-1]}' is not an access level")
        whos = [_parse_who(t) for t in part]
        who = whos[0] if len(whos) == 1 else Who("unknown", text=" ".join(part))
        clauses.append(By(who, op, privs, control, " ".join(toks[i:j])))  # type: ignore[arg-type]
        i = j
    return Rule(what, tuple(clauses), body)


@dataclass
class Acl:
    rules: list[Rule] = field(default_factory=list)
    # per entry (its DN and the entry object asked with): the rules whose <what> DN and filter
    # match it, whatever the attribute; a check asks about every attribute of each entry
    _by_entry: dict[tuple[DN, int], tuple[object, list[tuple[int, Rule]]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, texts: list[str]) -> Acl:
        return cls([parse_rule(t) for t in texts])

    def _rules_for(self, entry_dn: DN, entry: lf.Normalized | None) -> list[tuple[int, Rule]]:
        key = (entry_dn, id(entry))
        hit = self._by_entry.get(key)
        if hit is None or hit[0] is not entry:
            rules = [(ri, rule) for ri, rule in enumerate(self.rules)
                     if rule.what.matches_entry(entry_dn, entry)]
            hit = (entry, rules)
            self._by_entry[key] = hit
        return hit[1]

    def rules_for(self, entry_dn: DN, entry: dict[str, list[str]] | lf.Normalized | None
                  ) -> tuple[int, ...]:
        """The rules whose <what> DN and filter select the entry, whatever the attribute:
        two entries with the same rules and the same attribute names are decided alike for
        anyone but themselves ("self")."""
        lower = lf.normalize(entry) if entry is not None else None
        return tuple(ri for ri, _ in self._rules_for(entry_dn, lower))

    def classify(self, entries: Mapping[DN, lf.Normalized]) -> dict[DN, tuple[int, ...]]:
        """:meth:`rules_for` of every entry, asked once per kind of entry: entries under the
        same parent, with the same attribute names and the same values of the attributes the
        rules' filters test, are selected by the same rules, unless a rule names the entry
        itself (scope base, or the top of a subtree) or matches DNs by regex; those are asked
        one by one."""
        if any(r.what.dn is not None and r.what.dn.scope == "regex" for r in self.rules):
            return {d: self.rules_for(d, low) for d, low in entries.items()}
        named = {r.what.dn.ref.key() for r in self.rules
                 if r.what.dn is not None and r.what.dn.scope in ("base", "subtree")}
        tested = sorted({a.lower() for r in self.rules if r.what.filter is not None
                         for a in lf.attributes(r.what.filter)})
        kinds: dict[tuple[object, ...], tuple[int, ...]] = {}
        out: dict[DN, tuple[int, ...]] = {}
        for d, low in entries.items():
            key = d.key()
            if key in named:
                out[d] = self.rules_for(d, low)
                continue
            kind = (key[1:], frozenset(low), tuple(low.get(a) for a in tested))
            found = kinds.get(kind)
            if found is None:
                found = kinds[kind] = self.rules_for(d, low)
            out[d] = found
        return out

    def decide(self, who: DN | None, entry_dn: DN, attr: str,
               entry: dict[str, list[str]] | lf.Normalized | None = None) -> Decision:
        """What ``who`` (None: anonymous) may do to ``attr`` of the entry, as slapd decides it
        (``entry`` normalized once by the caller when it asks many times: lf.normalize)."""
        lower = lf.normalize(entry) if entry is not None else None
        attr = attr.lower()
        privs: set[str] = set()
        for ri, rule in self._rules_for(entry_dn, lower):
            attrs = rule.what.attr_set
            if attrs is not None and attr not in attrs:
                continue
            for ci, clause in enumerate(rule.by):
                if not clause.who.matches(who, entry_dn):
                    continue
                privs = clause.apply(privs)
                if clause.control == "stop":
                    return Decision(frozenset(privs), ri, ci)
                if clause.control == "break":
                    break
            else:
                return Decision(frozenset(), ri, None)   # the implicit "by * none"
        return Decision(frozenset(), None, None)

    def dead_clauses(self) -> list[tuple[int, int, int]]:
        """(rule, clause, earlier clause) for every by clause an earlier one always catches."""
        out = []
        for ri, rule in enumerate(self.rules):
            for ci, clause in enumerate(rule.by):
                for ei in range(ci):
                    earlier = rule.by[ei]
                    if earlier.control == "stop" and earlier.who.covers(clause.who):
                        out.append((ri, ci, ei))
                        break
        return out

    def shadowed_rules(self) -> list[tuple[int, int]]:
        """(rule, earlier rule) for every rule an earlier one always takes first."""
        out = []
        for ri, rule in enumerate(self.rules):
            for ei in range(ri):
                earlier = self.rules[ei]
                if any(c.control != "stop" for c in earlier.by):
                    continue
                if earlier.what.covers(rule.what):
                    out.append((ri, ei))
                    break
        return out
