"""Postfix: main.cf and master.cf as data, merged by one function; LDAP tables through proxymap.

Decisions: explicit ``mynetworks`` (loopback only) and ``mydestination``; mailboxes, domains,
aliases and sender logins from LDAP as ``proxy:ldap:`` tables binding as ``cn=postfix``;
delivery to Dovecot over LMTP; port 25 offers no AUTH and relays nothing; 587 (STARTTLS) and
465 (TLS) require SASL through Dovecot, TLS 1.2+, and refuse others' sender addresses; every
non-local message takes the route ``relays.py`` decides (one smtp transport per relay).
Non-LDAP tables are ``texthash:`` (no .db files).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from mailstack.ldap import filter as lf
from mailstack.plan import FileSpec, dit, hops, layout, relays, tls, topology
from mailstack.site.model import Site

LDAP_DIR = "/etc/postfix/ldap"
AUTH_REQUIRED = "REJECT 5.7.0 Authentication required"

Params = dict[str, str | None]


def merge(*layers: Mapping[str, str | None]) -> dict[str, str]:
    """Merge parameter layers in order; a later value wins, ``None`` removes the parameter.

    The result keeps first-appearance order, so a rendered file stays stable when a layer
    only changes a value.
    """
    out: dict[str, str | None] = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = value
    return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Service:
    """One master.cf line and its ``-o`` overrides."""

    name: str
    type: str
    private: str = "-"
    unpriv: str = "-"
    chroot: str = "-"
    wakeup: str = "-"
    maxproc: str = "-"
    command: str = ""
    options: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.type)


def merge_services(*layers: list[Service]) -> list[Service]:
    """Merge master.cf service lists; a later service with the same name and type replaces."""
    out: dict[tuple[str, str], Service] = {}
    for layer in layers:
        for svc in layer:
            out[svc.key] = svc
    return list(out.values())


def table(name: str) -> str:
    return f"proxy:ldap:{LDAP_DIR}/{name}.cf"


SENDER_LOGIN_EXTRA = "/etc/postfix/sender_login_extra"
TRANSPORT = "/etc/postfix/transport"
SENDER_TRANSPORT = "/etc/postfix/sender_transport"
OWN_SENDERS = "/etc/postfix/own_senders"
VIRTUAL_DOMAINS = "/etc/postfix/virtual_mailbox_domains"
ALIASES = "/etc/aliases"


def system_aliases(site: Site) -> list[tuple[str, str]]:
    """/etc/aliases: the local names that must reach a person, all to the site's postmaster."""
    postmaster = f"postmaster@{site.domains[0]}" if site.domains else "root"
    return [("postmaster:", "root"), ("MAILER-DAEMON:", "postmaster"), ("abuse:", "root"),
            ("root:", postmaster)]
TRUSTED_CLIENTS = "/etc/postfix/trusted_clients"
TRUSTED_CLIENT_NAMES = "/etc/postfix/trusted_client_names"
RATE_LIMITS = {
    "anvil_rate_time_unit": "60s",
    # connections per client and minute, any port (Postfix: no limit): a sending MTA opens a
    # few; a full `mailstack verify` run opens about 30
    "smtpd_client_connection_rate_limit": "60",
    # simultaneous connections per client (Postfix: 50)
    "smtpd_client_connection_count_limit": "20",
    # AUTH commands per client and minute on 465/587 (Postfix: no limit): a mail program logs
    # in once per connection; a guesser gets this many tries before fail2ban's ban
    "smtpd_client_auth_rate_limit": "20",
}
OWN_SENDER_REFUSED = ("REJECT 5.7.1 this sender belongs to the site: log in on port 587 "
                      "(submission) to send as it")


def own_senders(site: Site) -> list[tuple[str, str]]:
    """check_sender_access rows refusing, from clients that did not log in, every sender of the
    site's own domains and every outside address an account may send as (access(5): a domain
    key matches every address of that domain)."""
    keys = sorted({d.lower() for d in site.domains} |
                  {a.lower() for acc in site.accounts for a in acc.send_as})
    return [(k, OWN_SENDER_REFUSED) for k in keys]


def _own_relays(site: Site) -> tuple[list[ipaddress.IPv4Address | ipaddress.IPv6Address],
                                     list[str]]:
    """The hosts of the site's own relays, by IP and by name: those that take the site's mail
    without credentials, trusting it by address (a head office's relay). A relay that wants a
    login is a provider's, shared with strangers: it is never trusted with the site's
    senders."""
    ips, names = [], []
    for host in sorted({r.host.lower() for r in site.relays.values() if r.auth is None}):
        try:
            ips.append(ipaddress.ip_address(host))
        except ValueError:
            names.append(host)
    return ips, names


def trusted_clients(site: Site) -> list[tuple[str, str]]:
    """check_client_access cidr rows exempting the site's own relays named by IP address (the
    head office's relay hands inbound mail over with the site's senders in it)."""
    return [(f"{ip}/{ip.max_prefixlen}", "OK") for ip in _own_relays(site)[0]]


def trusted_client_names(site: Site) -> list[tuple[str, str]]:
    """check_client_access rows for the site's own relays named by host name. Postfix matches
    a client's name only when its reverse and forward DNS agree, else the name is "unknown"."""
    return [(name, "OK") for name in _own_relays(site)[1]]


MESSAGE_SIZE_LIMIT = "52428800"


def message_size_limit(site: Site) -> str:
    """main.cf's message_size_limit: the site's (postfix.main), else mailstack's 50 MiB."""
    return site.postfix.main.get("message_size_limit", MESSAGE_SIZE_LIMIT)


LOCKED_REFUSED = "REJECT 5.2.1 Mailbox disabled"
"""What a locked address answers at RCPT (ldap_table(5) result_format: a constant action)."""
ACCESS_TABLES = {"locked_accounts": LOCKED_REFUSED, "locked_aliases": LOCKED_REFUSED}
"""LDAP tables used as access(5) tables: the entry found answers this action, not a value."""


def locked_tables(site: Site) -> list[str]:
    """The lookups whose keys RCPT refuses: locked aliases always (one never routes), locked
    accounts unless ``ldap.locked_mail: accept`` (then their mail is still delivered)."""
    names = ["locked_aliases"]
    if site.ldap.locked_mail == "refuse":
        names.insert(0, "locked_accounts")
    return names


def locked_restrictions(site: Site) -> str:
    """check_recipient_access for locked addresses, first in the recipient restrictions: it must
    win over reject_unlisted_recipient (a locked alias is unknown to virtual_alias_maps) and,
    in smtpd_recipient_restrictions, nothing before it permits."""
    return ", ".join(f"check_recipient_access {table(n)}" for n in locked_tables(site))


LIST_POSTERS = "/etc/postfix/list_posters"
LIST_REFUSALS = "/etc/postfix/list_refusals"
LIST_ADDRESSES = "/etc/postfix/list_addresses"
LIST_MEMBERS_DIR = "/etc/postfix/list_members"
LIST_REFUSED = {
    "members": "REJECT 5.7.1 only members may post to this list",
    "site": "REJECT 5.7.1 only the site's users may post to this list: log in on port 587",
}
"""What a list answers a sender it does not take (access(5) actions, per ``post``)."""


def list_class(name: str) -> str:
    """The restriction class (main.cf parameter) that lets a members-only list's members post:
    the group's name with '.', '-' and '_' escaped (names may hold them, parameters not)."""
    escaped = name.replace("_", "__").replace(".", "_d").replace("-", "_h")
    return f"mailstack_list_{escaped}"


def list_members_path(name: str) -> str:
    return f"{LIST_MEMBERS_DIR}/{name}"


def list_addresses(site: Site) -> list[tuple[str, str]]:
    """The lists' addresses, each mapped to itself: the gate in front of the groups' LDAP table
    (:func:`alias_maps`), when the site file owns what exists (``ldap.accounts: site``); in
    directory mode lists may come from elsewhere, and every address asks the directory."""
    if site.ldap.accounts != "site":
        return []
    return sorted({(g.address.lower(), g.address.lower()) for g in site.groups if g.address})


def alias_maps(site: Site) -> str:
    """virtual_alias_maps: the aliases' LDAP table, then the lists'. smtpd (at RCPT) and cleanup
    both ask every recipient of every message, so an account's address would cost two searches
    of ou=groups that never find anything; behind ``pipemap:`` the lists' table is asked only
    for an address :data:`LIST_ADDRESSES` holds (pipemap stops at the first table's miss), and
    a message to an account takes 5 LDAP searches, not 7 (bench/stack.py counts them)."""
    if not any(g.address for g in site.groups):
        return table("virtual_alias_maps")
    groups = table("virtual_alias_groups")
    if list_addresses(site):
        groups = f"pipemap:{{texthash:{LIST_ADDRESSES}, {groups}}}"
    return f"{table('virtual_alias_maps')}, {groups}"


def list_refusals(site: Site) -> list[tuple[str, str]]:
    """check_recipient_access rows for port 25: a list that is not ``post: anyone`` refuses
    everyone there (no one logs in on port 25). access(5) tries ``team+x@`` as ``team@`` too."""
    return sorted((g.address.lower(), LIST_REFUSED[g.post]) for g in site.groups
                  if g.address and g.post != "anyone")


def list_posters(site: Site) -> list[tuple[str, str]]:
    """check_recipient_access rows for 587/465: a members-only list names its restriction
    class (the login must be a member); other lists need no row (every login may post)."""
    return sorted((g.address.lower(), list_class(g.name)) for g in site.groups
                  if g.address and g.post == "members")


def list_classes(site: Site) -> dict[str, str]:
    """Each members-only list's restriction class: the SASL login among its members (the
    login is the account's address), else the list's refusal."""
    return {list_class(g.name): f"check_sasl_access texthash:{list_members_path(g.name)}, "
                                f"check_recipient_access texthash:{LIST_REFUSALS}"
            for g in site.groups if g.address and g.post == "members"}


def sender_login_extra(site: Site) -> list[tuple[str, str]]:
    """The texthash sender login map beside LDAP's: an account's ``send_as`` (outside
    addresses) and a list's address for the members of its ``send_as`` (accounts or
    groups)."""
    rows: dict[str, list[str]] = {}
    for addr, owner in sorted((addr.lower(), a.mail) for a in site.accounts
                              for addr in a.send_as):
        rows.setdefault(addr, []).append(owner)
    names = {g.name for g in site.groups}
    for group in site.groups:
        if not group.address or not group.send_as:
            continue
        owners: dict[str, None] = {}
        for who in group.send_as:
            for mail in (dit.group_members(site, who) if who in names else (who,)):
                owners.setdefault(mail, None)
        rows.setdefault(group.address.lower(), []).extend(owners)
    return [(k, ", ".join(v)) for k, v in rows.items()]


def main_cf(site: Site, host: str) -> dict[str, str]:
    h = site.hosts[host]
    sender_logins = [table(n) for n in ("sender_login_accounts", "sender_login_aliases")]
    if sender_login_extra(site):
        sender_logins.append(f"texthash:{SENDER_LOGIN_EXTRA}")
    lists_25 = f", check_recipient_access texthash:{LIST_REFUSALS}" \
        if list_refusals(site) else ""
    lists_587 = f", check_recipient_access texthash:{LIST_POSTERS}" \
        if list_posters(site) else ""
    routes = routes_here(site, host)
    to_relay = hops.default_transport(site, host)
    transports = ([table("remote_mailboxes")] if hops.active(site) else []) + (
        [f"texthash:{TRANSPORT}"] if routes.recipients else [])
    by_cert = "permit_tls_clientcerts, " if hops.active(site) else ""
    relaying = by_cert if topology.relay_host(site) == host else ""
    base: Params = {
        "compatibility_level": "3.6",
        "myhostname": h.hostname,
        "myorigin": "$myhostname",
        "mydomain": h.hostname.split(".", 1)[1] if "." in h.hostname else h.hostname,
        "mydestination": "$myhostname, localhost.$mydomain, localhost",
        "mynetworks": "127.0.0.0/8 [::1]/128",
        "inet_interfaces": "all",
        "inet_protocols": "ipv4",
        "biff": "no",
        "append_dot_mydomain": "no",
        "readme_directory": "no",
        "alias_maps": f"hash:{ALIASES}",
        "alias_database": f"hash:{ALIASES}",
        # local recipients are the aliases only: system users (nobody, openldap, vmail) are not
        # recipients from outside; root's and Postfix's notices go to the site's postmaster
        "local_recipient_maps": "$alias_maps",
        "smtpd_banner": "$myhostname ESMTP",
        "recipient_delimiter": "+",
        "mailbox_size_limit": "0",
        "message_size_limit": MESSAGE_SIZE_LIMIT,
        # a sender learns within hours that a message waits behind a dead relay
        "delay_warning_time": "4h",
        # local domains: mailboxes and aliases from LDAP, delivered to Dovecot over LMTP
        # the site's domains are a static table rendered from the site file: outside addresses
        # cost no LDAP lookup, and an LDAP outage does not stop outbound mail
        "virtual_mailbox_domains": f"texthash:{VIRTUAL_DOMAINS}",
        "virtual_mailbox_maps": table("virtual_mailbox_maps"),
        "virtual_alias_maps": alias_maps(site),
        "virtual_alias_domains": "",
        "virtual_transport": f"lmtp:unix:{layout.LMTP_SOCKET}",
        "smtpd_sender_login_maps": ", ".join(sender_logins),
        "proxy_read_maps": " ".join(
            ["$local_recipient_maps", "$mydestination", "$virtual_alias_maps",
             "$virtual_alias_domains", "$virtual_mailbox_maps", "$virtual_mailbox_domains",
             "$relay_recipient_maps", "$relay_domains", "$canonical_maps",
             "$sender_canonical_maps", "$recipient_canonical_maps", "$relocated_maps",
             "$transport_maps", "$mynetworks", "$smtpd_sender_login_maps",
             *(table(n) for n in locked_tables(site)),
             # a table inside pipemap:{} is not approved by $virtual_alias_maps
             *([table("virtual_alias_groups")] if list_addresses(site) else [])]),
        # non-local mail: recipient routes, then sender routes, then the default (relays.py)
        "relayhost": "",
        # with several mail hosts, one that is not the relay sends all of it to the relay
        # (plan/hops.py); an account homed elsewhere goes to its home (remote_mailboxes)
        "default_transport": to_relay or routes.default,
        "transport_maps": ", ".join(transports),
        "sender_dependent_default_transport_maps":
            f"texthash:{SENDER_TRANSPORT}" if routes.senders else "",
        "smtp_sasl_auth_enable": "no",
        "smtp_fallback_relay": "",
        # port 25: TLS offered, no AUTH, only local recipients unless the client is local
        "smtpd_tls_cert_file": tls.served_cert(site, host),
        "smtpd_tls_key_file": tls.served_key(site, host),
        "smtpd_tls_security_level": "may",
        "smtpd_tls_loglevel": "1",
        "smtpd_tls_received_header": "yes",
        "smtpd_tls_session_cache_database": "btree:${data_directory}/smtpd_scache",
        "smtpd_tls_protocols": ">=TLSv1.2",
        "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
        "smtpd_tls_exclude_ciphers": "aNULL, eNULL",
        "smtpd_tls_mandatory_exclude_ciphers": "aNULL, eNULL",
        "smtpd_sasl_auth_enable": "no",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": layout.SASL_SOCKET,
        "smtpd_sasl_security_options": "noanonymous",
        "smtpd_sasl_local_domain": "",
        "smtpd_helo_required": "yes",
        # the relay host relays for the site's other mail hosts (known by their keys)
        "smtpd_relay_restrictions": f"permit_mynetworks, {relaying}reject_unauth_destination",
        # a locked address: permanent 5.2.1 (before the unknown-recipient 5.1.1)
        # then a list that takes no mail from outside (post: members/site): 5.7.1
        "smtpd_recipient_restrictions": f"{locked_restrictions(site)}, reject_unlisted_recipient"
                                        f"{lists_25}",
        # port 25: the site's own senders only from the site itself (no AUTH here: log in on 587)
        # (and from the site's other mail hosts: the site's own path, plan/hops.py)
        "smtpd_sender_restrictions": f"permit_mynetworks, {by_cert}check_client_access cidr:"
                                     f"{TRUSTED_CLIENTS}, check_client_access texthash:"
                                     f"{TRUSTED_CLIENT_NAMES}, check_sender_access "
                                     f"texthash:{OWN_SENDERS}",
        "disable_vrfy_command": "yes",
        # brute force, first line: anvil counts each client's events per anvil_rate_time_unit
        # and smtpd answers 4.7.0 beyond the limit (fail2ban bans the addresses that keep
        # failing: plan/fail2ban.py). Loopback and the site's own relays are exempt.
        **RATE_LIMITS,
        "smtpd_client_event_limit_exceptions": f"$mynetworks, cidr:{TRUSTED_CLIENTS}, "
                                               f"texthash:{TRUSTED_CLIENT_NAMES}",
        # the submission services' restrictions, referenced from master.cf
        "mailstack_submission_client_restrictions":
            f"permit_sasl_authenticated, check_client_access static:{{{AUTH_REQUIRED}}}",
        "mailstack_submission_sender_restrictions": "reject_sender_login_mismatch",
        "mailstack_submission_relay_restrictions": "permit_sasl_authenticated, reject",
        "mailstack_submission_recipient_restrictions": f"{locked_restrictions(site)}{lists_587}",
        # a members-only list: its class admits its members' logins (list_classes)
        **list_classes(site),
        "smtpd_restriction_classes": " ".join(list_classes(site)) or None,
        # outgoing TLS (each relay's transport sets its own level, CA and credentials)
        "smtp_tls_CAfile": relays.SYSTEM_CA,
        "smtp_tls_security_level": "may",
        "smtp_tls_loglevel": "1",
        "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
        "smtp_tls_mandatory_protocols": ">=TLSv1.2",
        "smtp_tls_protocols": ">=TLSv1.2",
        **hops.main_cf(site, host),
    }
    return merge(base, site.postfix.main)


def routes_here(site: Site, host: str) -> relays.Tables:
    """The site's routes, on the host that applies them: the only mail host, or the relay
    host (the others send everything to it); elsewhere none."""
    if hops.default_transport(site, host) is not None:
        return relays.Tables((), (), "")
    return relays.tables(site)


def _submission(name: str, wrapper: bool) -> Service:
    opts = [
        ("syslog_name", f"postfix/{name}"),
        ("smtpd_tls_security_level", "encrypt"),
        ("smtpd_sasl_auth_enable", "yes"),
        ("smtpd_tls_auth_only", "yes"),
        ("smtpd_client_restrictions", "$mailstack_submission_client_restrictions"),
        ("smtpd_sender_restrictions", "$mailstack_submission_sender_restrictions"),
        ("smtpd_relay_restrictions", "$mailstack_submission_relay_restrictions"),
        ("smtpd_recipient_restrictions", "$mailstack_submission_recipient_restrictions"),
        ("milter_macro_daemon_name", "ORIGINATING"),
    ]
    if wrapper:
        opts.insert(1, ("smtpd_tls_wrappermode", "yes"))
    return Service(name, "inet", "n", "-", "y", "-", "-", "smtpd", tuple(opts))


def default_services() -> list[Service]:
    """Debian's master.cf services, as data (chroot as Debian ships them)."""
    s = Service
    return [
        s("smtp", "inet", "n", "-", "y", "-", "-", "smtpd"),
        s("pickup", "unix", "n", "-", "y", "60", "1", "pickup"),
        s("cleanup", "unix", "n", "-", "y", "-", "0", "cleanup"),
        s("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
        s("tlsmgr", "unix", "-", "-", "y", "1000?", "1", "tlsmgr"),
        s("rewrite", "unix", "-", "-", "y", "-", "-", "trivial-rewrite"),
        s("bounce", "unix", "-", "-", "y", "-", "0", "bounce"),
        s("defer", "unix", "-", "-", "y", "-", "0", "bounce"),
        s("trace", "unix", "-", "-", "y", "-", "0", "bounce"),
        s("verify", "unix", "-", "-", "y", "-", "1", "verify"),
        s("flush", "unix", "n", "-", "y", "1000?", "0", "flush"),
        s("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
        s("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
        s("smtp", "unix", "-", "-", "y", "-", "-", "smtp"),
        s("relay", "unix", "-", "-", "y", "-", "-", "smtp",
          (("syslog_name", "postfix/$service_name"),)),
        s("showq", "unix", "n", "-", "y", "-", "-", "showq"),
        s("error", "unix", "-", "-", "y", "-", "-", "error"),
        s("retry", "unix", "-", "-", "y", "-", "-", "error"),
        s("discard", "unix", "-", "-", "y", "-", "-", "discard"),
        s("local", "unix", "-", "n", "n", "-", "-", "local"),
        s("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
        s("lmtp", "unix", "-", "-", "y", "-", "-", "lmtp"),
        s("anvil", "unix", "-", "-", "y", "-", "1", "anvil"),
        s("scache", "unix", "-", "-", "y", "-", "1", "scache"),
        s("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
    ]


def relay_services(site: Site) -> list[Service]:
    return [Service(relays.transport_name(name), "unix", "-", "-", "y", "-", "-", "smtp",
                    relays.transport_options(name, relay))
            for name, relay in sorted(site.relays.items())]


def master_cf(site: Site, host: str | None = None) -> list[Service]:
    outside = relay_services(site) if host is None or \
        hops.default_transport(site, host) is None else []
    own = [Service(hops.TRANSPORT, "unix", "-", "-", "y", "-", "-", "smtp",
                   hops.transport_options(host))] if host and hops.active(site) else []
    return merge_services(default_services(),
                          [_submission("submission", False), _submission("submissions", True)],
                          outside, own)


def ldap_table(site: Site, name: str, ldap_uri: str, bind_pw: str,
               host: str | None = None) -> dict[str, str]:
    """One Postfix LDAP table's settings (ldap_table(5)), from the lookup as data, as ``host``
    makes it."""
    lookup = {lk.name: lk for lk in dit.lookups(site, host)}[name]
    settings = {
        "server_host": ldap_uri,
        "version": "3",
        "bind": "yes",
        "bind_dn": str(dit.service_dn(site, "postfix")),
        "bind_pw": bind_pw,
        "search_base": str(lookup.base).replace("%", "%%"),
        "scope": lookup.scope,
        "query_filter": lf.render(lookup.filter),
        "result_attribute": ", ".join(lookup.returns),
        **({"special_result_attribute": ", ".join(lookup.special),
            "leaf_result_attribute": ", ".join(lookup.leaf)} if lookup.special else {}),
        # every Postfix lookup is keyed by an address: only the site's own domains reach LDAP
        # (ldap_table(5): bare-domain and "@domain" keys are then not looked up, which no
        # table here uses)
        "domain": ", ".join(d.lower() for d in site.domains),
    }
    if name in ACCESS_TABLES:
        settings["result_format"] = ACCESS_TABLES[name]
    if name == "remote_mailboxes" and host is not None:
        settings["result_format"] = hops.remote_format(site, host)
    if not ldap_uri.startswith("ldapi:"):
        settings.update({"start_tls": "yes", "tls_ca_cert_file": layout.CA_CERT,
                         "tls_require_cert": "yes"})
    if " " in ldap_uri:
        # the host's replica first, then the provider: a replica that hangs gives a temporary
        # failure within seconds, not after the default 10
        settings["timeout"] = "2"
    return settings


def table_answer(site: Site, name: str, key: str, host: str | None = None) -> set[str]:
    """What the LDAP table ``name`` answers for ``key`` on the rendered directory, from the
    lookup as data (the entries its filter matches; their returned values, or the table's
    constant action): the expected answer of ``check --with-daemons``' postmap questions on
    ``host``. Empty: not found."""
    lookup = {lk.name: lk for lk in dit.lookups(site, host)}[name]
    query = lf.substitute(lookup.filter, key)
    found = [e.as_dict() for e in dit.entries(site)
             if e.dn.is_below(lookup.base) and lf.matches(query, e.as_dict())]
    if not found:
        return set()
    if name in ACCESS_TABLES:
        return {ACCESS_TABLES[name]}
    out = {v for entry in found for attr in lookup.returns for v in entry.get(attr, ())}
    if name == "remote_mailboxes" and host is not None:
        out = {hops.remote_format(site, host).replace("%s", v) for v in out}
    if lookup.special:
        out |= _followed(site, lookup, found)
    return out


def _followed(site: Site, lookup: dit.Lookup, found: list[dict[str, list[str]]]) -> set[str]:
    """ldap_table(5)'s recursion: each ``special`` DN is read; an entry with special values is
    followed further, one without gives its ``leaf`` values. Each DN once (a cycle ends)."""
    by_dn = {str(e.dn).lower(): e.as_dict() for e in dit.entries(site)}
    out: set[str] = set()
    seen: set[str] = set()
    todo = [v for entry in found for attr in lookup.special for v in entry.get(attr, ())]
    while todo:
        d = todo.pop().lower()
        if d in seen or d not in by_dn:
            continue
        seen.add(d)
        entry = by_dn[d]
        nested = [v for attr in lookup.special for v in entry.get(attr, ())]
        if nested:
            todo += nested
        else:
            out |= {v for attr in lookup.leaf for v in entry.get(attr, ())}
    return out


def files(site: Site, host: str, ldap_uri: str, secrets: Mapping[str, str]) -> list[FileSpec]:
    out = [
        FileSpec("/etc/postfix/main.cf", "etc/postfix/main.cf.j2",
                 {"params": list(main_cf(site, host).items())}),
        FileSpec("/etc/postfix/master.cf", "etc/postfix/master.cf.j2",
                 {"services": master_cf(site, host)}),
        FileSpec("/etc/mailname", "_formats/verbatim.j2", {"text": site.hosts[host].hostname + "\n"}),
        FileSpec(ALIASES, "_formats/table.j2", {"rows": system_aliases(site)}),
        FileSpec(VIRTUAL_DOMAINS, "_formats/table.j2",
                 {"rows": [(d.lower(), "OK") for d in site.domains]}),
    ]
    pw = secrets[layout.secret_service("postfix")]
    for lookup in dit.lookups(site, host):
        if lookup.service != "postfix":
            continue
        out.append(FileSpec(f"{LDAP_DIR}/{lookup.name}.cf", "_formats/keyvalue.j2",
                            {"settings": list(ldap_table(site, lookup.name, ldap_uri, pw,
                                                         host).items()),
                             "header": f"Postfix LDAP table {lookup.name} (ldap_table(5))"},
                            0o640, "root", "postfix"))
    routes = routes_here(site, host)
    for name, relay in sorted(site.relays.items()) if routes.default else []:
        if relay.auth:
            out.append(FileSpec(relays.sasl_path(name), "_formats/table.j2",
                                {"rows": [(relays.nexthop(relay), f"{relay.auth.user}:"
                                           f"{secrets[relay.auth.password_secret]}")]}, 0o600))
        if relay.ca_secret:
            out.append(FileSpec(relays.ca_path(name), "_formats/verbatim.j2",
                                {"text": secrets[relay.ca_secret]}))
    if hops.active(site):
        out.append(FileSpec(hops.PEERS, "_formats/table.j2",
                            {"rows": hops.peers(site, host, secrets)}))
    if routes.recipients:
        out.append(FileSpec(TRANSPORT, "_formats/table.j2", {"rows": list(routes.recipients)}))
    if routes.senders:
        out.append(FileSpec(SENDER_TRANSPORT, "_formats/table.j2", {"rows": list(routes.senders)}))
    out.append(FileSpec(OWN_SENDERS, "_formats/table.j2", {"rows": own_senders(site)}))
    out.append(FileSpec(TRUSTED_CLIENTS, "_formats/table.j2", {"rows": trusted_clients(site)}))
    out.append(FileSpec(TRUSTED_CLIENT_NAMES, "_formats/table.j2",
                        {"rows": trusted_client_names(site)}))
    extra = sender_login_extra(site)
    if extra:
        out.append(FileSpec(SENDER_LOGIN_EXTRA, "_formats/table.j2", {"rows": extra}))
    if list_addresses(site):
        out.append(FileSpec(LIST_ADDRESSES, "_formats/table.j2", {"rows": list_addresses(site)}))
    if list_refusals(site):
        out.append(FileSpec(LIST_REFUSALS, "_formats/table.j2", {"rows": list_refusals(site)}))
    if list_posters(site):
        out.append(FileSpec(LIST_POSTERS, "_formats/table.j2", {"rows": list_posters(site)}))
    for group in site.groups:
        if group.address and group.post == "members":
            out.append(FileSpec(list_members_path(group.name), "_formats/table.j2",
                                {"rows": [(m.lower(), "OK")
                                          for m in dit.group_members(site, group.name)]}))
    return out
