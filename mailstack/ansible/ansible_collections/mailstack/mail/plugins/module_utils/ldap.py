"""Shared by mailstack's LDAP modules: a small LDIF reader and ldapi connections.

Runs on the managed host with Debian's python3-ldap3. Values are kept as bytes everywhere, so
what is compared is exactly what slapd stores.
"""

from __future__ import annotations

import base64
import contextlib
import re

try:
    import ldap3
    from ldap3.utils.dn import safe_dn

    HAS_LDAP3 = True
except ImportError:  # pragma: no cover - reported by the modules
    HAS_LDAP3 = False

LDAPI_URI = "ldapi://%2Frun%2Fslapd%2Fldapi"
# LDAP result codes the modules tell apart.
NO_SUCH_OBJECT = 32
INVALID_CREDENTIALS = 49

# Attributes slapd maintains itself; never compared, never sent.
OPERATIONAL = frozenset(a.lower() for a in (
    "structuralObjectClass", "entryUUID", "creatorsName", "createTimestamp", "entryCSN",
    "modifiersName", "modifyTimestamp", "contextCSN", "hasSubordinates", "subschemaSubentry",
    "entryDN", "pwdChangedTime", "pwdLastSuccess",
))

_ORDER_PREFIX = re.compile(rb"^\{-?\d+\}")


class LdifError(ValueError):
    pass


def parse_ldif(text):
    """Parse LDIF content records into ``[(dn, [(attr, value_bytes), ...]), ...]``.

    Handles comments, folded lines, ``attr: value`` and ``attr:: base64``; a ``version:`` line
    is skipped. Change records and ``attr:< URL`` are refused (mailstack never writes them).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    lines = []
    in_comment = False
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith(" "):
            if in_comment:
                continue
            if not lines or lines[-1][1] is None:
                raise LdifError(f"line {number}: continuation line without a line to continue")
            lines[-1] = (lines[-1][0], lines[-1][1] + raw[1:])
            continue
        in_comment = raw.startswith("#")
        if not in_comment:
            lines.append((number, raw if raw.strip() else None))
    entries = []
    current = None
    for number, line in lines:
        if line is None:
            if current is not None:
                entries.append(current)
                current = None
            continue
        attr, sep, rest = line.partition(":")
        if not sep:
            raise LdifError(f"line {number}: expected 'attribute: value': {line[:60]!r}")
        if rest.startswith(":"):
            try:
                value = base64.b64decode(rest[1:].strip(), validate=True)
            except ValueError:
                raise LdifError(f"line {number}: invalid base64 value of {attr}") from None
        elif rest.startswith("<"):
            raise LdifError(f"line {number}: URL values ({attr}:<) are not supported")
        else:
            value = rest.lstrip(" ").encode("utf-8")
        attr = attr.strip()
        if current is None:
            if attr.lower() == "version":
                continue
            if attr.lower() != "dn":
                raise LdifError(f"line {number}: an entry must start with dn:, not {attr}:")
            current = (value.decode("utf-8"), [])
        elif attr.lower() in ("changetype", "control"):
            raise LdifError(f"line {number}: change records are not supported")
        else:
            current[1].append((attr, value))
    if current is not None:
        entries.append(current)
    return entries


def norm_dn(dn):
    """A DN as a comparison key: RFC 4514 form, no spaces around separators, lower case."""
    with contextlib.suppress(Exception):
        dn = safe_dn(dn)
    return ",".join(part.strip() for part in dn.split(",")).lower()


def group_attrs(pairs):
    """``[(attr, value)]`` -> ``{lower name: (name, [values])}`` keeping value order."""
    out = {}
    for attr, value in pairs:
        key = attr.lower()
        if key not in out:
            out[key] = (attr, [])
        out[key][1].append(value)
    return out


def is_ordered(values):
    """X-ORDERED 'VALUES' attributes carry a ``{n}`` prefix on every value."""
    return bool(values) and all(_ORDER_PREFIX.match(v) for v in values)


def strip_order(value):
    return _ORDER_PREFIX.sub(b"", value, count=1)


def same_values(attr, want, have, ordered_attrs):
    """Equal as ordered lists (ordered attributes) or as multisets (everything else)."""
    if attr.lower() in ordered_attrs or is_ordered(want) or is_ordered(have):
        return list(want) == list(have)
    if attr.lower() == "objectclass":
        return sorted(v.lower() for v in want) == sorted(v.lower() for v in have)
    return sorted(want) == sorted(have)


def server(uri):
    return ldap3.Server(uri, get_info=ldap3.NONE)


def connect_root(uri):
    """Bind as root over ldapi with SASL EXTERNAL (slapd maps it to the peercred DN)."""
    conn = ldap3.Connection(server(uri), authentication=ldap3.SASL,
                            sasl_mechanism=ldap3.EXTERNAL, sasl_credentials=b"",
                            raise_exceptions=False, read_only=False)
    if not conn.bind():
        raise LdapError(f"cannot bind to {uri} as root with SASL EXTERNAL: {describe(conn)}")
    return conn


def simple_bind(uri, dn, password):
    """Try a simple bind; return the LDAP result code (0 on success)."""
    conn = ldap3.Connection(server(uri), user=dn, password=password, raise_exceptions=False)
    try:
        conn.bind()
        return conn.result.get("result", -1) if conn.result else -1
    finally:
        conn.unbind()


def read_entry(conn, dn, attributes=("*",)):
    """The entry's attributes as ``{lower name: (name, [bytes])}``, or None when it is missing."""
    ok = conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(attributes))
    code = conn.result.get("result") if conn.result else None
    if not ok:
        if code == NO_SUCH_OBJECT:
            return None
        if code == 0:  # no entry returned (not visible)
            return None
        raise LdapError(f"cannot read {dn}: {describe(conn)}")
    for item in conn.response or ():
        if item.get("type") == "searchResEntry":
            return group_attrs((name, v) for name, values in item["raw_attributes"].items()
                               for v in values)
    return None


def search_subtree(conn, base, scope=None):
    """Every entry below and including ``base``: ``[(dn, {lower name: (name, [bytes])})]``
    (``scope=ldap3.LEVEL``: the entries one level below it)."""
    if not conn.search(base, "(objectClass=*)", search_scope=scope or ldap3.SUBTREE,
                       attributes=["*"]):
        code = conn.result.get("result") if conn.result else None
        if code == NO_SUCH_OBJECT:
            return []
        if code != 0:
            raise LdapError(f"cannot search {base}: {describe(conn)}")
    out = []
    for item in conn.response or ():
        if item.get("type") == "searchResEntry":
            out.append((item["dn"], group_attrs((name, v) for name, values
                                                in item["raw_attributes"].items()
                                                for v in values)))
    return out


def describe(conn):
    result = conn.result or {}
    text = f"{result.get('description', 'no answer')} ({result.get('result', '?')})"
    if result.get("message"):
        text += ": " + result["message"].strip()
    return text


class LdapError(Exception):
    pass
