#!/usr/bin/python
"""Ansible module: bring a running slapd's cn=config or directory tree in line with an LDIF."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ldap_entries
short_description: Bring slapd's cn=config or its directory tree in line with a rendered LDIF
description:
  - Compares the entries of an LDIF file on the host with what a running slapd holds and
    changes only what differs, online, over ldapi as root (SASL EXTERNAL).
  - Missing entries are added (parents first); differing attribute values are replaced.
    O(ordered_attributes) and X-ORDERED attributes (values with a C({n}) prefix) are compared
    as ordered lists; other attributes as sets of values. A second run reports C(changed=false).
  - "O(kind=config): the LDIF is what C(slapadd -n0) loads (it may contain C(include:) lines).
    It is first loaded offline into a scratch directory and read back with C(slapcat -n0), so
    the comparison uses slapd's own form of every value. Every attribute of a cn=config entry
    is managed (live attributes the render lacks are deleted). Schemas can only be appended:
    slapd 2.5 cannot change or delete a loaded schema online, and the module fails saying so."
  - "O(kind=data): only the attributes the LDIF names are managed, and O(protected_attributes)
    (userPassword) are never touched on an existing entry: passwords are set with RFC 3062 by
    mailstack.mail.ldap_password."
  - "O(owned_attributes) (O(kind=data)): attributes the site owns although the LDIF may not name
    them on an entry (mailstackLocked, mailstackDisabledService, mailstackQuota): deleted from an
    existing entry whose rendered form lacks them."
  - "Reconcile (O(kind=data), O(reconcile_bases)): the entries one level under each base that the
    LDIF does not name are locked (objectClass mailstackEntry added when missing,
    mailstackLocked: TRUE), or with O(prune) deleted. With O(accounts=directory) only entries
    carrying C(mailstackOrigin: site) (apply created them) are locked or pruned, and existing
    entries under O(accounts_base) are never modified (apply only adds the missing ones)."
  - Other entries slapd holds that the LDIF does not name are left alone and listed in
    RV(unmanaged).
options:
  path:
    description: LDIF file on the host.
    type: path
    required: true
  kind:
    description: C(config) for cn=config, C(data) for the directory tree.
    type: str
    choices: [config, data]
    required: true
  uri:
    description: ldapi URI of the local slapd.
    type: str
    default: ldapi://%2Frun%2Fslapd%2Fldapi
  protected_attributes:
    description: Attributes never changed on an existing entry (O(kind=data)).
    type: list
    elements: str
    default: [userPassword]
  ordered_attributes:
    description: Attributes compared as ordered lists even without C({n}) prefixes.
    type: list
    elements: str
    default: [olcAccess, olcDbIndex]
  owned_attributes:
    description: Attributes deleted from an existing entry when the LDIF's entry lacks them.
    type: list
    elements: str
    default: []
  initial_attributes:
    description:
      - Attributes set on an existing entry only where it has none, never changed (who created
        the entry, mailstackOrigin, stays as it was written at creation).
    type: list
    elements: str
    default: []
  reconcile_bases:
    description: DNs whose children the LDIF does not name are locked or pruned (O(kind=data)).
    type: list
    elements: str
    default: []
  accounts_base:
    description: The DN of the accounts (their pruned mail addresses are returned).
    type: str
  accounts:
    description: C(site) (the site file owns which accounts exist) or C(directory).
    type: str
    choices: [site, directory]
    default: site
  prune:
    description: Delete the entries that left the site instead of locking them.
    type: bool
    default: false
  slapadd:
    description: slapadd program (O(kind=config)).
    type: path
    default: /usr/sbin/slapadd
  slapcat:
    description: slapcat program (O(kind=config)).
    type: path
    default: /usr/sbin/slapcat
requirements: [python3-ldap3]
attributes:
  check_mode:
    support: full
author: mailstack
"""

EXAMPLES = r"""
- name: Bring cn=config in line with the rendered configuration
  mailstack.mail.ldap_entries:
    path: /var/lib/mailstack/ldap/config.ldif
    kind: config
"""

RETURN = r"""
added:
  description: DNs added.
  type: list
  returned: always
modified:
  description: DN -> names of the attributes changed.
  type: dict
  returned: always
unmanaged:
  description: DNs slapd holds that the LDIF does not name (left alone).
  type: list
  returned: always
locked:
  description: DNs that left the site and were locked now.
  type: list
  returned: always
still_locked:
  description: DNs that left the site and were locked before (prune removes them).
  type: list
  returned: always
unlocked:
  description: DNs back in the site whose lock was removed.
  type: list
  returned: always
pruned:
  description: DNs that left the site and were deleted (O(prune)).
  type: list
  returned: always
pruned_mail:
  description: The mail addresses of the deleted accounts (their mailboxes go to the archive).
  type: list
  returned: always
mailstack_reconciled:
  description: "[action, DN] pairs for apply's recap: locked, still locked, unlocked, pruned."
  type: list
  returned: always
"""

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.mailstack.mail.plugins.module_utils.ldap import (  # noqa: E402
    HAS_LDAP3,
    OPERATIONAL,
    LdapError,
    LdifError,
    connect_root,
    describe,
    group_attrs,
    is_ordered,
    norm_dn,
    parse_ldif,
    read_entry,
    same_values,
    search_subtree,
    strip_order,
)
from ansible_collections.mailstack.mail.plugins.module_utils.reconcile import (  # noqa: E402
    DIRECTORY,
    first_value,
    left_site,
    lock_changes,
)

try:
    import ldap3
except ImportError:  # pragma: no cover - reported through HAS_LDAP3
    ldap3 = None

SCHEMA_PARENT = "cn=schema,cn=config"
SCHEMA_ATTRS = ("olcattributetypes", "olcobjectclasses", "olcobjectidentifier",
                "olcldapsyntaxes", "olcditcontentrules")
NO_UNLOAD = ("olcmoduleload",)
REBUILD = ("To rebuild the directory offline: back it up (slapcat -n1 -l backup.ldif), stop "
           "slapd, move /etc/ldap/slapd.d and /var/lib/ldap aside and apply again; accounts then "
           "get their initial passwords from the secrets again")


class Refused(Exception):
    """A difference mailstack must not (or slapd cannot) resolve online."""


def canonical_config(module, path):
    """Load the config LDIF offline into a scratch slapd.d and read it back (slapd's form)."""
    scratch = tempfile.mkdtemp(prefix="mailstack-slapd-")
    try:
        os.chmod(scratch, 0o700)
        confdir = os.path.join(scratch, "slapd.d")
        os.mkdir(confdir, 0o700)
        for argv in ([module.params["slapadd"], "-n0", "-F", confdir, "-l", path],
                     [module.params["slapcat"], "-n0", "-F", confdir, "-o", "ldif_wrap=no"]):
            proc = subprocess.run(argv, capture_output=True, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
                program = os.path.basename(argv[0])
                raise Refused(f"{path}: {program} refused it (exit {proc.returncode}): "
                              f"{tail[-800:]}")
        return parse_ldif(proc.stdout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def user_attrs(attrs):
    return {k: v for k, v in attrs.items() if k not in OPERATIONAL}


def schema_name(dn):
    rdn = dn.split(",", 1)[0]
    value = rdn.split("=", 1)[1] if "=" in rdn else rdn
    return strip_order(value.encode()).decode()


def attribute_changes(dn, want, have, ordered, manage_all, protected, owned=(), initial=()):
    """ldap3 modify changes turning ``have`` into ``want`` (both {lower: (name, [bytes])});
    attributes ``want`` lacks are deleted with ``manage_all`` or when ``owned``; an
    ``initial`` attribute is only ever added (set where missing, never changed)."""
    changes = {}
    keys = list(want) + [k for k in have if k not in want and (manage_all or k in owned)]
    for key in keys:
        if key in protected or (key in initial and have.get(key, (key, []))[1]):
            continue
        name, values = want.get(key, (have.get(key, (key, []))[0], []))
        current = have.get(key, (name, []))[1]
        if same_values(key, values, current, ordered):
            continue
        if not values:
            changes[name] = [(ldap3.MODIFY_DELETE, [])]
        elif not current:
            changes[name] = [(ldap3.MODIFY_ADD, values)]
        elif is_ordered(values) and current == values[:len(current)]:
            changes[name] = [(ldap3.MODIFY_ADD, values[len(current):])]  # append in order
        elif key in NO_UNLOAD:
            wanted = [v.decode() for v in values]
            raise Refused(f"{dn}: {name} differs from the rendered {wanted}, and slapd cannot "
                          "unload a module online")
        else:
            changes[name] = [(ldap3.MODIFY_REPLACE, values)]
    return changes


def plan_config(conn, wanted, ordered):
    """Changes for cn=config: (adds, modifies, unmanaged)."""
    live = {norm_dn(dn): (dn, user_attrs(a)) for dn, a in search_subtree(conn, "cn=config")}
    adds, modifies = [], []
    want_schemas = [(dn, a) for dn, a in wanted if norm_dn(dn).endswith("," + SCHEMA_PARENT)]
    have_schemas = sorted(((dn, a) for key, (dn, a) in live.items()
                           if key.endswith("," + SCHEMA_PARENT)),
                          key=lambda item: _order_of(item[0]))
    for index, (dn, attrs) in enumerate(want_schemas):
        if index >= len(have_schemas):
            adds.append((dn, attrs))
            continue
        have_dn, have_attrs = have_schemas[index]
        same = schema_name(dn).lower() == schema_name(have_dn).lower() and all(
            same_values(k, attrs.get(k, (k, []))[1], have_attrs.get(k, (k, []))[1], ordered)
            for k in SCHEMA_ATTRS)
        if not same:
            raise Refused(
                f"slapd has schema {schema_name(have_dn)} loaded as {have_dn}, where the rendered "
                f"configuration has {schema_name(dn)} ({dn}): slapd 2.5 cannot change or delete "
                f"a loaded schema online. {REBUILD}")
    if len(have_schemas) > len(want_schemas):
        extra = [schema_name(dn) for dn, _ in have_schemas[len(want_schemas):]]
        raise Refused(
            f"slapd has schema {', '.join(extra)} loaded, which the rendered configuration no "
            f"longer has: slapd 2.5 cannot delete a schema online. {REBUILD}")
    wanted_keys = set()
    for dn, attrs in wanted:
        key = norm_dn(dn)
        wanted_keys.add(key)
        if key.endswith("," + SCHEMA_PARENT) or key == SCHEMA_PARENT:
            continue  # schemas above; cn=schema itself holds slapd's built-in schema
        if key not in live:
            adds.append((dn, attrs))
            continue
        changes = attribute_changes(dn, attrs, live[key][1], ordered, True, ())
        if changes:
            modifies.append((live[key][0], changes))
    unmanaged = [dn for key, (dn, _) in live.items()
                 if key not in wanted_keys and not key.endswith("," + SCHEMA_PARENT)]
    # schema additions must come before the databases that may use them: keep LDIF order
    order = {norm_dn(dn): i for i, (dn, _) in enumerate(wanted)}
    adds.sort(key=lambda item: order[norm_dn(item[0])])
    return adds, modifies, unmanaged


def _order_of(dn):
    value = dn.split(",", 1)[0].split("=", 1)[-1]
    if value.startswith("{") and "}" in value:
        try:
            return int(value[1:value.index("}")])
        except ValueError:
            pass
    return 1 << 30


def plan_data(conn, wanted, ordered, protected, owned=frozenset(), keep_under=None,
              initial=frozenset()):
    """Changes for the directory tree: (adds, modifies, unmanaged). Existing entries below
    ``keep_under`` (a normalised DN: the accounts of ``ldap.accounts: directory``) are never
    modified."""
    adds, modifies = [], []
    for dn, attrs in wanted:
        have = read_entry(conn, dn)
        if have is None:
            adds.append((dn, attrs))
            continue
        if keep_under and norm_dn(dn).endswith("," + keep_under):
            continue
        changes = attribute_changes(dn, attrs, user_attrs(have), ordered, False, protected,
                                    owned, initial)
        if changes:
            modifies.append((dn, changes))
    return adds, modifies, []


LOCK_OPS = {"add": "MODIFY_ADD", "replace": "MODIFY_REPLACE"}


def plan_reconcile(conn, wanted, bases, mode, prune):
    """What to do with the entries under ``bases`` that left the site: (locks, deletes,
    still_locked): locks ``[(dn, ldap3 changes)]``, deletes ``[(dn, attrs)]``, still_locked
    the DNs locked before (without ``prune`` they stay as they are)."""
    wanted_keys = {norm_dn(dn) for dn, _ in wanted}
    live = []
    for base in bases:
        for dn, attrs in search_subtree(conn, base, ldap3.LEVEL):
            live.append((dn, user_attrs(attrs), norm_dn(dn)))
    locks, deletes, still = [], [], []
    for dn, attrs in left_site(live, wanted_keys, mode):
        if prune:
            deletes.append((dn, attrs))
            continue
        changes = lock_changes(attrs)
        if not changes:
            still.append(dn)
            continue
        locks.append((dn, {name: [(getattr(ldap3, LOCK_OPS[op]), values) for op, values in steps]
                           for name, steps in changes.items()}))
    return locks, deletes, still


def unlocked(modifies):
    """The DNs whose mailstackLocked a modify deletes (back in the site, or enabled again)."""
    return [dn for dn, changes in modifies
            if any(name.lower() == "mailstacklocked" and op == ldap3.MODIFY_DELETE
                   for name, steps in changes.items() for op, _ in steps)]


def apply_changes(conn, adds, modifies, deletes=()):
    # a module loaded by a modify of cn=module{N} comes first: an added entry may need it
    # (an overlay's entry, e.g. olcOverlay=ppolicy, is refused until its module is loaded)
    early = [(dn, c) for dn, c in modifies if norm_dn(dn).startswith("cn=module")]
    for dn, changes in early:
        if not conn.modify(dn, changes):
            raise LdapError(f"slapd refused to change {', '.join(changes)} of {dn}: "
                            f"{describe(conn)}")
    modifies = [m for m in modifies if m not in early]
    for dn, attrs in adds:
        body = {name: values for name, values in attrs.values()}
        classes = [v.decode() for v in body.pop(attrs["objectclass"][0], [])] \
            if "objectclass" in attrs else []
        if not conn.add(dn, classes, body):
            raise LdapError(f"slapd refused to add {dn}: {describe(conn)}")
    for dn, changes in modifies:
        if not conn.modify(dn, changes):
            raise LdapError(f"slapd refused to change {', '.join(changes)} of {dn}: "
                            f"{describe(conn)}")
    for dn, _ in deletes:
        if not conn.delete(dn):
            raise LdapError(f"slapd refused to delete {dn}: {describe(conn)}")


SECRET_ATTRIBUTES = ("userpassword", "olcrootpw")
"""Shown as (secret) in a diff."""


def _shown(name, value):
    if name.lower() in SECRET_ATTRIBUTES:
        return f"{name}: (secret)"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return f"{name}:: (binary, {len(value)} bytes)"
    return f"{name}: {text}"


def change_ldif(adds, modifies, deletes=()):
    """The planned changes as LDIF change records (for Ansible's diff mode); secrets hidden."""
    ops = {ldap3.MODIFY_ADD: "add", ldap3.MODIFY_DELETE: "delete",
           ldap3.MODIFY_REPLACE: "replace"}
    lines = []
    for dn, attrs in adds:
        lines += [f"dn: {dn}", "changetype: add"]
        lines += [_shown(name, v) for name, values in attrs.values() for v in values]
        lines.append("")
    for dn, changes in modifies:
        lines += [f"dn: {dn}", "changetype: modify"]
        for name, steps in changes.items():
            for op, values in steps:
                lines.append(f"{ops[op]}: {name}")
                lines += [_shown(name, v) for v in values]
                lines.append("-")
        lines.append("")
    for dn, _ in deletes:
        lines += [f"dn: {dn}", "changetype: delete", ""]
    return "\n".join(lines)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            kind=dict(type="str", required=True, choices=["config", "data"]),
            uri=dict(type="str", default="ldapi://%2Frun%2Fslapd%2Fldapi"),
            protected_attributes=dict(type="list", elements="str", default=["userPassword"]),
            ordered_attributes=dict(type="list", elements="str",
                                    default=["olcAccess", "olcDbIndex"]),
            owned_attributes=dict(type="list", elements="str", default=[]),
            initial_attributes=dict(type="list", elements="str", default=[]),
            reconcile_bases=dict(type="list", elements="str", default=[]),
            accounts_base=dict(type="str"),
            accounts=dict(type="str", default="site", choices=["site", "directory"]),
            prune=dict(type="bool", default=False),
            slapadd=dict(type="path", default="/usr/sbin/slapadd"),
            slapcat=dict(type="path", default="/usr/sbin/slapcat"),
        ),
        supports_check_mode=True,
    )
    if not HAS_LDAP3:
        module.fail_json(msg=missing_required_lib("ldap3 (Debian package python3-ldap3)"))
    params = module.params
    ordered = frozenset(a.lower() for a in params["ordered_attributes"])
    protected = frozenset(a.lower() for a in params["protected_attributes"])
    owned = frozenset(a.lower() for a in params["owned_attributes"])
    initial = frozenset(a.lower() for a in params["initial_attributes"])
    accounts_base = norm_dn(params["accounts_base"]) if params["accounts_base"] else None
    keep_under = accounts_base if params["accounts"] == DIRECTORY else None
    path = params["path"]
    locks, deletes, still = [], [], []
    try:
        if params["kind"] == "config":
            entries = canonical_config(module, path)
        else:
            with open(path, "rb") as fh:
                entries = parse_ldif(fh.read())
        wanted = [(dn, user_attrs(group_attrs(pairs))) for dn, pairs in entries]
        conn = connect_root(params["uri"])
        try:
            if params["kind"] == "config":
                adds, modifies, unmanaged = plan_config(conn, wanted, ordered)
            else:
                adds, modifies, unmanaged = plan_data(conn, wanted, ordered, protected, owned,
                                                      keep_under, initial)
                if params["reconcile_bases"]:
                    locks, deletes, still = plan_reconcile(
                        conn, wanted, params["reconcile_bases"], params["accounts"],
                        params["prune"])
            if not module.check_mode:
                apply_changes(conn, adds, modifies + locks, deletes)
        finally:
            conn.unbind()
    except (OSError, LdifError) as err:
        module.fail_json(msg=f"{path}: {err}")
    except (Refused, LdapError) as err:
        module.fail_json(msg=str(err))
    modified = {dn: sorted(changes) for dn, changes in modifies}
    was_unlocked = unlocked(modifies)
    summary = []
    if adds:
        summary.append("added " + ", ".join(dn for dn, _ in adds))
    for dn, attrs in modified.items():
        summary.append(f"changed {', '.join(attrs)} of {dn}")
    if locks:
        summary.append("locked " + "; ".join(dn for dn, _ in locks))
    if deletes:
        summary.append("pruned " + "; ".join(dn for dn, _ in deletes))
    base_key = "," + accounts_base if accounts_base else None
    pruned_mail = [
        first_value(attrs, "mail") for dn, attrs in deletes
        if base_key and norm_dn(dn).endswith(base_key) and first_value(attrs, "mail")]
    reconciled = ([["locked", dn] for dn, _ in locks] + [["still locked", dn] for dn in still]
                  + [["unlocked", dn] for dn in was_unlocked]
                  + [["pruned", dn] for dn, _ in deletes])
    result = dict(changed=bool(adds or modifies or locks or deletes),
                  added=[dn for dn, _ in adds], modified=modified, unmanaged=unmanaged,
                  locked=[dn for dn, _ in locks], still_locked=still, unlocked=was_unlocked,
                  pruned=[dn for dn, _ in deletes], pruned_mail=pruned_mail,
                  mailstack_reconciled=reconciled,
                  msg=", ".join(summary) or "nothing to change")
    if module._diff and (adds or modifies or locks or deletes):
        result["diff"] = {"prepared": change_ldif(adds, modifies + locks, deletes)}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
