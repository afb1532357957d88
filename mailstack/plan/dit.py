"""The directory tree and the lookups the daemons make in it.

One place decides the DNs, the object classes of each kind of entry (by schema profile) and,
as data, every LDAP lookup Dovecot and Postfix make (:class:`Lookup`). The ACL, the indices,
the daemons' LDAP files, ``check`` and ``verify`` all read these same lookups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from mailstack.ldap import filter as f
from mailstack.ldap.dn import DN, dn
from mailstack.ldap.ldif import Entry
from mailstack.plan import layout, topology
from mailstack.plan.memo import per_site
from mailstack.site.model import Account, Site
from mailstack.site.sizes import account_quota

# Courier's schema needs these first (homeDirectory: nis; mailhost: misc).
STANDARD_SCHEMAS = ("core", "cosine", "nis", "inetorgperson", "misc")
PLACEHOLDER_PASSWORD = "{CRYPT}!unusable-until-set-by-rfc3062"

# mailstack's own auxiliary schema (data/schema/mailstack.ldif; never edited once released:
# later needs go into a new schema "mailstack2"). Every account, alias and domain entry
# mailstack writes carries ENTRY_CLASS.
OWN_SCHEMA = "mailstack"
ENTRY_CLASS = "mailstackEntry"
DISABLED_SERVICE = "mailstackDisabledService"
LOCKED = "mailstackLocked"
QUOTA = "mailstackQuota"
ORIGIN = "mailstackOrigin"
MAIL_HOST = "mailstackMailHost"
ACL_GROUP = "mailstackAclGroup"
ORIGIN_SITE = "site"       # apply created it from the site file
ORIGIN_CLI = "cli"         # `mailstack user add` created it
SITE_OWNED = (DISABLED_SERVICE, LOCKED, QUOTA, ACL_GROUP, MAIL_HOST)
"""Attributes the site file owns: a re-apply deletes them where the site no longer sets them."""

# The site's service names and Dovecot's (%s: Postfix asks Dovecot's auth as service smtp;
# ManageSieve logs in as service sieve).
DOVECOT_SERVICE = {"imap": "imap", "pop3": "pop3", "submission": "smtp", "sieve": "sieve"}


@dataclass(frozen=True)
class Profile:
    """How a schema profile represents accounts and aliases."""

    name: str
    schemas: tuple[str, ...]
    account_classes: tuple[str, ...]
    account_class: str          # the class lookups filter on
    alias_classes: tuple[str, ...]
    alias_class: str
    alias_key: str              # attribute holding the alias address
    alias_target: str           # attribute holding where it goes
    home_attr: str | None       # attribute holding the mailbox home, if the schema has one


PROFILES = {
    "courier": Profile(
        name="courier", schemas=(*STANDARD_SCHEMAS, "courier", OWN_SCHEMA),
        account_classes=("inetOrgPerson", "CourierMailAccount"), account_class="CourierMailAccount",
        alias_classes=("nisMailAlias", "CourierMailAlias"), alias_class="CourierMailAlias",
        alias_key="mail", alias_target="maildrop", home_attr="homeDirectory",
    ),
    "inetorgperson": Profile(
        name="inetorgperson", schemas=(*STANDARD_SCHEMAS, OWN_SCHEMA),
        account_classes=("inetOrgPerson",), account_class="inetOrgPerson",
        alias_classes=("nisMailAlias",), alias_class="nisMailAlias",
        alias_key="cn", alias_target="rfc822MailMember", home_attr=None,
    ),
}


@dataclass(frozen=True)
class Lookup:
    """One LDAP lookup a daemon makes: who searches where, for what, and what it reads back."""

    name: str                   # also the Postfix table / Dovecot file it lives in
    service: str                # service account that binds for it
    base: DN
    filter: f.Filter            # with the daemon's placeholder for the key
    returns: tuple[str, ...]
    key: Literal["account", "alias", "domain", "list"]   # what kind of key a probe feeds it
    scope: Literal["sub", "one"] = "sub"
    # Postfix's recursion (ldap_table(5)): values of ``special`` are DNs the daemon reads next
    # (a base search with the filter (objectClass=*)) below the bases in ``follows``, taking
    # ``leaf`` from entries that have no ``special`` value; the ACL and the matrix grant that too
    special: tuple[str, ...] = ()
    leaf: tuple[str, ...] = ()
    follows: tuple[DN, ...] = ()
    # the filter's other placeholder, if any, and the values the daemon puts there (Dovecot's
    # %Ls: the service); the ACL matrix and the probes expand the filter once per value
    service_token: str | None = None
    services: tuple[str, ...] = ()


def base(site: Site) -> DN:
    return dn(site.ldap.base)


def ou(site: Site, name: str) -> DN:
    return base(site).child("ou", name)


def admin_dn(site: Site) -> DN:
    """The entry tools bind as with the secret ldap/admin (``ldap.root_password``); not the
    database's olcRootDN, which is root over ldapi (layout.ROOT_PEERCRED_DN)."""
    return base(site).child("cn", "admin")


def policy_dn(site: Site) -> DN:
    """slapd's default password policy (ppolicy's olcPPolicyDefault)."""
    return ou(site, layout.OU_POLICIES).child("cn", layout.DEFAULT_POLICY)


def service_dn(site: Site, service: str) -> DN:
    return ou(site, layout.OU_APPLICATIONS).child("cn", service)


def account_dn(site: Site, mail: str) -> DN:
    return ou(site, layout.OU_PEOPLE).child("mail", mail)


def alias_dn(site: Site, address: str) -> DN:
    return ou(site, layout.OU_ALIASES).child(profile(site).alias_key, address)


def group_dn(site: Site, name: str) -> DN:
    return ou(site, layout.OU_GROUPS).child("cn", name)


def group_addresses(site: Site) -> dict[str, str]:
    """Every distribution list's address -> its group's name."""
    return {g.address: g.name for g in site.groups if g.address}


def group_members(site: Site, name: str) -> tuple[str, ...]:
    """Every account (address as the site writes it) a group reaches, nested groups included,
    each once, in the order first met. The site's check refuses cycles and unknown names."""
    groups = {g.name: g for g in site.groups}
    out: dict[str, None] = {}
    seen: set[str] = set()

    def walk(group: str) -> None:
        if group in seen:
            return
        seen.add(group)
        for member in groups[group].members:
            if member in groups:
                walk(member)
            else:
                out.setdefault(member, None)

    walk(name)
    return tuple(out)


def acl_groups_value(groups: tuple[str, ...] | list[str]) -> str:
    """An account's one ``mailstackAclGroup`` value: its group names joined with ',' (group
    names cannot contain ','); Dovecot's userdb hands it over as ``acl_groups``."""
    return ",".join(sorted(groups))


@per_site
def account_groups(site: Site) -> Mapping[str, tuple[str, ...]]:
    """Account address (lower case) -> the names of every group it is in, nested included,
    sorted: the values of its mailstackAclGroup (Dovecot's acl_groups)."""
    out: dict[str, set[str]] = {}
    for group in site.groups:
        for member in group_members(site, group.name):
            out.setdefault(member.lower(), set()).add(group.name)
    return MappingProxyType({mail: tuple(sorted(names)) for mail, names in out.items()})


def domain_dn(site: Site, domain: str) -> DN:
    return ou(site, layout.OU_DOMAINS).child("associatedDomain", domain)


def profile(site: Site) -> Profile:
    return PROFILES[site.ldap.schema]


def mail_home(address: str) -> str:
    """A mailbox's home: the one value Dovecot's IMAP, POP3 and LMTP all resolve."""
    local, _, domain = address.rpartition("@")
    return f"{layout.VMAIL_DIR}/{domain.lower()}/{local.lower()}"


def alias_targets(site: Site) -> dict[str, tuple[str, ...]]:
    """Every local alias address and where it goes (account aliases and standalone aliases)."""
    out: dict[str, tuple[str, ...]] = {}
    for account in site.accounts:
        for address in account.aliases:
            out[address] = (*out.get(address, ()), account.mail)
    for alias in site.aliases:
        out[alias.address] = (*out.get(alias.address, ()), *alias.to)
    return out


MAILHOST_TOKEN = "{mailhost}"
"""Stands for the asking host's name in a lookup of a site with several mail hosts, until the
plan renders the lookup for one host (:func:`lookups` with ``host``)."""


def here(site: Site, host: str | None) -> f.Filter:
    """(mailstackMailHost=<host's name>): the accounts whose home is ``host``."""
    return f.Eq(MAIL_HOST, site.hosts[host].hostname.lower() if host is not None
                else f.Placeholder(MAILHOST_TOKEN))


def lookups(site: Site, host: str | None = None) -> tuple[Lookup, ...]:
    """Every lookup Dovecot and Postfix make, as data; as ``host`` makes them, where a site has
    several mail hosts (each asks for the accounts whose home it is: :func:`here`)."""
    p = profile(site)
    # the site's domains are no lookup: Postfix reads them from a table rendered from the site
    people, aliases, groups = (ou(site, n) for n in (layout.OU_PEOPLE, layout.OU_ALIASES,
                                                     layout.OU_GROUPS))
    dovecot_key, postfix_key = f.Placeholder("%u"), f.Placeholder("%s")
    service = f.Placeholder(SERVICE_TOKEN)
    homed = (here(site, host),) if topology.several_homes(site) else ()
    account_filter = f.and_(f.Eq("objectClass", p.account_class), f.Eq("mail", dovecot_key),
                            *homed)
    userdb_returns = (*((p.home_attr,) if p.home_attr else ("mail",)), QUOTA, ACL_GROUP)
    not_locked = f.Not(f.Eq(LOCKED, "TRUE"))
    return (
        # first passdb (deny = yes): a locked account, or a service the account may not use
        Lookup("passdb_deny", "dovecot", people,
               f.and_(f.Eq("objectClass", ENTRY_CLASS), f.Eq("mail", dovecot_key),
                      f.Or((f.Eq(LOCKED, "TRUE"), f.Eq(DISABLED_SERVICE, service)))),
               ("mail",), "account", service_token=SERVICE_TOKEN,
               services=tuple(DOVECOT_SERVICE.values())),
        Lookup("passdb", "dovecot", people, account_filter, ("mail",), "account"),
        Lookup("userdb", "dovecot", people, account_filter, userdb_returns, "account"),
        Lookup("virtual_mailbox_maps", "postfix", people,
               f.and_(f.Eq("objectClass", p.account_class), f.Eq("mail", postfix_key)),
               ("mail",), "account"),
        # a locked alias routes nowhere (and locked_aliases refuses it at RCPT)
        Lookup("virtual_alias_maps", "postfix", aliases,
               f.and_(f.Eq("objectClass", p.alias_class), f.Eq(p.alias_key, postfix_key),
                      not_locked),
               (p.alias_target,), "alias"),
        # a distribution list: Postfix follows each member DN (nested groups too) and takes
        # the accounts' mail; a locked group (left the site) expands no more
        Lookup("virtual_alias_groups", "postfix", groups,
               f.and_(f.Eq("objectClass", GROUP_CLASS), f.Eq(LIST_ADDRESS, postfix_key),
                      not_locked),
               (), "list", special=(GROUP_MEMBER,), leaf=("mail",), follows=(people, groups)),
        Lookup("sender_login_accounts", "postfix", people,
               f.and_(f.Eq("objectClass", p.account_class), f.Eq("mail", postfix_key)),
               ("mail",), "account"),
        Lookup("sender_login_aliases", "postfix", aliases,
               f.and_(f.Eq("objectClass", p.alias_class), f.Eq(p.alias_key, postfix_key)),
               (p.alias_target,), "alias"),
        # check_recipient_access: a locked account or alias is refused at RCPT (5.2.1)
        Lookup("locked_accounts", "postfix", people,
               f.and_(f.Eq("objectClass", ENTRY_CLASS), f.Eq("mail", postfix_key),
                      f.Eq(LOCKED, "TRUE")),
               ("mail",), "account"),
        Lookup("locked_aliases", "postfix", aliases,
               f.and_(f.Eq("objectClass", ENTRY_CLASS), f.Eq(p.alias_key, postfix_key),
                      f.Eq(LOCKED, "TRUE")),
               (p.alias_key,), "alias"),
        # transport_maps: an account whose home is another host goes there (plan/postfix.py
        # turns its home's name into the next hop); only with several mail hosts
        *((Lookup("remote_mailboxes", "postfix", people,
                  f.and_(f.Eq("objectClass", ENTRY_CLASS), f.Eq("mail", postfix_key),
                         f.Present(MAIL_HOST), f.Not(here(site, host))),
                  (MAIL_HOST,), "account"),) if homed else ()),
    )


GROUP_CLASS = "groupOfNames"
GROUP_CLASSES = (GROUP_CLASS, "inetLocalMailRecipient")
GROUP_MEMBER = "member"
LIST_ADDRESS = "mailLocalAddress"


def followed(lookup: Lookup) -> tuple[str, ...]:
    """What the daemon reads on each entry it reaches by a ``special`` DN (besides ``entry``):
    the base search's filter (objectClass=*), the special and the leaf attributes."""
    return ("objectClass", *lookup.special, *lookup.leaf) if lookup.special else ()


SERVICE_TOKEN = "%Ls"
"""Dovecot's placeholder for the service (lower case) in the passdb_deny filter."""


def expand_service(lookup: Lookup, service: str) -> f.Filter:
    """The lookup's filter as the daemon sends it for one service (ACL matrix, probes)."""
    if lookup.service_token is None:
        return lookup.filter
    return f.substitute(lookup.filter, service, lookup.service_token)


def iterate_filter(site: Site, host: str | None = None) -> f.Filter:
    """Dovecot's user iteration (doveadm ... -A): every account that may log in somewhere
    (with several mail hosts: here)."""
    homed = (here(site, host),) if topology.several_homes(site) else ()
    return f.and_(f.Eq("objectClass", profile(site).account_class),
                  f.Not(f.Eq(LOCKED, "TRUE")), *homed)


def index_attributes(site: Site) -> tuple[str, ...]:
    """Equality indices: every attribute a generated filter asserts on."""
    attrs: set[str] = set()
    for lookup in lookups(site):
        attrs |= f.equality_attributes(lookup.filter)
    attrs |= f.equality_attributes(iterate_filter(site))
    return tuple(sorted(attrs, key=str.lower))


def _container(d: DN, name: str) -> Entry:
    return Entry(d, (("objectClass", "organizationalUnit"), ("ou", name)))


def _base_entry(site: Site) -> Entry:
    b = base(site)
    attr, value = b.rdns[0][0]
    if attr.lower() == "dc":
        return Entry(b, (("objectClass", "dcObject"), ("objectClass", "organization"),
                         ("dc", value), ("o", site.site)))
    if attr.lower() == "o":
        return Entry(b, (("objectClass", "organization"), ("o", value)))
    return Entry(b, (("objectClass", "organizationalUnit"), ("ou", value)))


def _surname(name: str) -> str:
    return name.split()[-1] if name.split() else name


@per_site
def normalized(site: Site) -> Mapping[DN, f.Normalized]:
    """Each entry of :func:`entries` as filters see it (ldap.filter.normalize), made once."""
    return MappingProxyType({e.dn: f.normalize_pairs(e.attrs) for e in entries(site)})


@per_site
def entries(site: Site) -> tuple[Entry, ...]:
    """The DIT in load order (parents first). Passwords are placeholders: set via RFC 3062."""
    p = profile(site)
    out = [_base_entry(site)]
    for name in (layout.OU_PEOPLE, layout.OU_ALIASES, layout.OU_GROUPS, layout.OU_DOMAINS,
                 layout.OU_APPLICATIONS, layout.OU_POLICIES):
        out.append(_container(ou(site, name), name))
    out.append(policy_entry(site))
    if site.ldap.root_password:
        # tools that bind as the admin (the secret ldap/admin, set by RFC 3062 like a service
        # account's); the ACL lets it manage everything
        out.append(Entry(admin_dn(site), (
            ("objectClass", "organizationalRole"), ("objectClass", "simpleSecurityObject"),
            ("cn", "admin"), ("description", "the directory's administrator (tools)"),
            ("userPassword", PLACEHOLDER_PASSWORD))))
    for service in layout.SERVICE_ACCOUNTS:
        out.append(Entry(service_dn(site, service), (
            ("objectClass", "applicationProcess"), ("objectClass", "simpleSecurityObject"),
            ("cn", service), ("description", f"{service}: reads what its lookups need"),
            ("userPassword", PLACEHOLDER_PASSWORD))))
    for domain in site.domains:
        out.append(Entry(domain_dn(site, domain), (
            ("objectClass", "organizationalUnit"), ("objectClass", "domainRelatedObject"),
            ("objectClass", ENTRY_CLASS),
            ("ou", domain), ("associatedDomain", domain), (ORIGIN, ORIGIN_SITE))))
    for account in (*site.accounts, *delivery_accounts(site)):
        out.append(account_entry(site, account, ORIGIN_SITE))
    locked = locked_accounts(site)
    for address, targets in alias_targets(site).items():
        attrs = [*(("objectClass", c) for c in p.alias_classes), ("objectClass", ENTRY_CLASS),
                 ("cn", address)]
        if p.alias_key != "cn":
            attrs.append((p.alias_key, address))
        attrs += [(p.alias_target, t) for t in targets]
        if site.ldap.locked_mail == "refuse" and {t.lower() for t in targets} <= locked:
            # it reaches locked accounts only: refused at RCPT like them (locked_aliases)
            attrs.append((LOCKED, "TRUE"))
        attrs.append((ORIGIN, ORIGIN_SITE))
        out.append(Entry(alias_dn(site, address), tuple(attrs)))
    out += group_entries(site)
    return tuple(out)


def group_entries(site: Site) -> list[Entry]:
    """The groups, nested ones before the groups that name them (slapd checks nothing, but a
    reader of the LDIF meets each member DN before it is used). ``member``: account DNs and
    group DNs, as the site lists them."""
    names = {g.name for g in site.groups}
    done: dict[str, Entry] = {}

    def add(name: str, path: tuple[str, ...]) -> None:
        if name in done or name in path:
            return
        group = next(g for g in site.groups if g.name == name)
        for m in group.members:
            if m in names:
                add(m, (*path, name))
        # every group is a possible list (inetLocalMailRecipient): giving one an address later
        # changes no object class
        attrs = [*(("objectClass", c) for c in GROUP_CLASSES),
                 ("objectClass", ENTRY_CLASS), ("cn", group.name)]
        if group.address:
            attrs.append((LIST_ADDRESS, group.address))
        attrs += [(GROUP_MEMBER, str(group_dn(site, m) if m in names else account_dn(site, m)))
                  for m in group.members]
        attrs.append((ORIGIN, ORIGIN_SITE))
        done[name] = Entry(group_dn(site, group.name), tuple(attrs))

    for g in site.groups:
        add(g.name, ())
    return list(done.values())


RECONCILED_OUS = (layout.OU_PEOPLE, layout.OU_ALIASES, layout.OU_DOMAINS, layout.OU_GROUPS)
"""The OUs whose entries the site file owns: one not in the render is locked (or pruned)."""


def owned_attributes(site: Site) -> tuple[str, ...]:
    """Attributes the site owns on an existing entry even where its render leaves them out
    (a re-apply deletes them then): the site-owned ones, an alias's targets, a group's members
    and its list address."""
    return (*SITE_OWNED, profile(site).alias_target, GROUP_MEMBER, LIST_ADDRESS)


def reconcile_facts(site: Site) -> dict[str, object]:
    """What the slapd role's reconcile reads (module mailstack.mail.ldap_entries)."""
    return {"bases": [str(ou(site, name)) for name in RECONCILED_OUS],
            "accounts_base": str(ou(site, layout.OU_PEOPLE)),
            "accounts": site.ldap.accounts,
            "owned": list(owned_attributes(site)),
            # who created an entry is written once (`user add` stays "cli" after an apply)
            "initial": [ORIGIN]}


def policy_entry(site: Site) -> Entry:
    """ppolicy's default policy: a minimum length, checked on the cleartext (the Password
    Modify operation and a plain modify both hand slapd the cleartext; a pre-hashed value
    cannot be checked and is refused), no lockout by failure count (Dovecot binds as the user:
    guessing would lock the real user out; rate limits and bans answer guessing), no expiry."""
    return Entry(policy_dn(site), (
        ("objectClass", "device"), ("objectClass", "pwdPolicy"),
        ("cn", layout.DEFAULT_POLICY), ("description", "mailstack: every password's policy"),
        ("pwdAttribute", "userPassword"),
        ("pwdMinLength", str(site.ldap.password_policy.min_length)),
        ("pwdCheckQuality", "2"),
        ("pwdLockout", "FALSE"), ("pwdMaxFailure", "0"),
        ("pwdMaxAge", "0"), ("pwdMinAge", "0"), ("pwdInHistory", "0"),
        ("pwdMustChange", "FALSE"), ("pwdAllowUserChange", "TRUE"), ("pwdSafeModify", "FALSE")))


def delivery_accounts(site: Site) -> tuple[Account, ...]:
    """Accounts for delivery only (no service, no password): a shared folder's address, whose
    Sieve script files its mail (plan/sieve.py)."""
    return tuple(Account(mail=folder.address, name=f"Shared folder {folder.name}", protocols=())
                 for folder in site.shared_folders if folder.address)


def locked_accounts(site: Site) -> set[str]:
    """The addresses (lower case) of the site's locked accounts (``enabled: false``)."""
    return {a.mail.lower() for a in site.accounts if not a.enabled}


def disabled_services(account: Account) -> tuple[str, ...]:
    """Dovecot's names of the services the account may not log in to."""
    return tuple(DOVECOT_SERVICE[s] for s in DOVECOT_SERVICE if s not in account.protocols)


def account_entry(site: Site, account: Account, origin: str) -> Entry:
    """An account's entry: what the site file says about it, the password a placeholder."""
    p = profile(site)
    attrs = [*(("objectClass", c) for c in p.account_classes), ("objectClass", ENTRY_CLASS),
             ("cn", account.name), ("sn", _surname(account.name)), ("mail", account.mail)]
    if p.home_attr:
        attrs.append((p.home_attr, mail_home(account.mail)))
    attrs += [(DISABLED_SERVICE, s) for s in disabled_services(account)]
    groups = account_groups(site).get(account.mail.lower(), ())
    if groups:
        # ONE value, the names joined with ',' (Dovecot 2.3.19 takes only the first value of
        # a multi-valued attribute and has no %{ldap_multi}: plan/folders.acl_groups_value)
        attrs.append((ACL_GROUP, acl_groups_value(groups)))
    if not account.enabled:
        attrs.append((LOCKED, "TRUE"))
    quota = account_quota(site.quota.default, account.quota)
    if quota is not None:
        attrs.append((QUOTA, str(quota)))
    if topology.several_homes(site):
        attrs.append((MAIL_HOST, topology.home_name(site, account)))
    attrs.append((ORIGIN, origin))
    attrs.append(("userPassword", PLACEHOLDER_PASSWORD))
    return Entry(account_dn(site, account.mail), tuple(attrs))
