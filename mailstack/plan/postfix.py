"""Postfix: main.cf and master.cf as data, merged by one function; LDAP tables through proxymap.

Decisions: explicit ``mynetworks`` (loopback only) and ``mydestination``; mailboxes, domains,
aliases and sender logins from LDAP as ``proxy:ldap:`` tables binding as ``cn=postfix``;
delivery to Dovecot over LMTP; port 25 offers no AUTH and relays nothing; 587 (STARTTLS) and
465 (TLS) require SASL through Dovecot, TLS 1.2+, and refuse others' sender addresses; every
non-local message goes to the site's relay. Non-LDAP tables are ``texthash:`` (no .db files).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailstack.ldap import filter as lf
from mailstack.plan import FileSpec, dit, facts
from mailstack.site.model import Relay, Site

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


def relay_target(relay: Relay) -> str:
    """relayhost syntax: ``[host]:port`` (brackets: no MX lookup)."""
    return f"[{relay.host}]:{relay.port}"


def main_cf(site: Site, host: str) -> dict[str, str]:
    h = site.hosts[host]
    relay = None if site.relay.default == "direct" else site.relays[site.relay.default]
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
        "alias_maps": "hash:/etc/aliases",
        "alias_database": "hash:/etc/aliases",
        "smtpd_banner": "$myhostname ESMTP",
        "recipient_delimiter": "+",
        "mailbox_size_limit": "0",
        "message_size_limit": "52428800",
        # local domains: mailboxes and aliases from LDAP, delivered to Dovecot over LMTP
        "virtual_mailbox_domains": table("virtual_mailbox_domains"),
        "virtual_mailbox_maps": table("virtual_mailbox_maps"),
        "virtual_alias_maps": table("virtual_alias_maps"),
        "virtual_alias_domains": "",
        "virtual_transport": f"lmtp:unix:{facts.LMTP_SOCKET}",
        "smtpd_sender_login_maps": ", ".join(
            table(n) for n in ("sender_login_accounts", "sender_login_aliases")),
        "proxy_read_maps": " ".join(
            ["$local_recipient_maps", "$mydestination", "$virtual_alias_maps",
             "$virtual_alias_domains", "$virtual_mailbox_maps", "$virtual_mailbox_domains",
             "$relay_recipient_maps", "$relay_domains", "$canonical_maps",
             "$sender_canonical_maps", "$recipient_canonical_maps", "$relocated_maps",
             "$transport_maps", "$mynetworks", "$smtpd_sender_login_maps"]),
        # non-local mail
        "relayhost": relay_target(relay) if relay else "",
        # port 25: TLS offered, no AUTH, only local recipients unless the client is local
        "smtpd_tls_cert_file": facts.host_cert(host),
        "smtpd_tls_key_file": facts.host_key(host),
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
        "smtpd_sasl_path": facts.SASL_SOCKET,
        "smtpd_sasl_security_options": "noanonymous",
        "smtpd_sasl_local_domain": "",
        "smtpd_helo_required": "yes",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "smtpd_recipient_restrictions": "reject_unlisted_recipient",
        "disable_vrfy_command": "yes",
        # the submission services' restrictions, referenced from master.cf
        "mailstack_submission_client_restrictions":
            f"permit_sasl_authenticated, check_client_access static:{{{AUTH_REQUIRED}}}",
        "mailstack_submission_sender_restrictions": "reject_sender_login_mismatch",
        "mailstack_submission_relay_restrictions": "permit_sasl_authenticated, reject",
        # outgoing TLS
        "smtp_tls_CAfile": facts.CA_CERT,
        "smtp_tls_security_level": _smtp_tls_level(relay),
        "smtp_tls_loglevel": "1",
        "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
        "smtp_tls_mandatory_protocols": ">=TLSv1.2",
        "smtp_tls_protocols": ">=TLSv1.2",
    }
    if relay and relay.tls == "wrapper":
        base["smtp_tls_wrappermode"] = "yes"
    if relay and relay.auth:
        base.update({
            "smtp_sasl_auth_enable": "yes",
            "smtp_sasl_password_maps": "texthash:/etc/postfix/sasl_passwd",
            "smtp_sasl_security_options": "noanonymous",
            "smtp_sasl_tls_security_options": "noanonymous",
        })
    if relay and relay.ca_secret:
        base["smtp_tls_CAfile"] = "/etc/postfix/relay-ca.crt"
    if relay and relay.tls_name:
        base["smtp_tls_policy_maps"] = "texthash:/etc/postfix/tls_policy"
    return merge(base, site.postfix.main)


def _smtp_tls_level(relay: Relay | None) -> str:
    if relay is None:
        return "may"
    return {"verify": "secure", "wrapper": "secure", "encrypt": "encrypt"}[relay.tls]


def _submission(name: str, wrapper: bool) -> Service:
    opts = [
        ("syslog_name", f"postfix/{name}"),
        ("smtpd_tls_security_level", "encrypt"),
        ("smtpd_sasl_auth_enable", "yes"),
        ("smtpd_tls_auth_only", "yes"),
        ("smtpd_client_restrictions", "$mailstack_submission_client_restrictions"),
        ("smtpd_sender_restrictions", "$mailstack_submission_sender_restrictions"),
        ("smtpd_relay_restrictions", "$mailstack_submission_relay_restrictions"),
        ("smtpd_recipient_restrictions", ""),
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


def master_cf(site: Site) -> list[Service]:
    return merge_services(default_services(),
                          [_submission("submission", False), _submission("submissions", True)])


def ldap_table(site: Site, name: str, ldap_uri: str, bind_pw: str) -> dict[str, str]:
    """One Postfix LDAP table's settings (ldap_table(5)), from the lookup as data."""
    lookup = {lk.name: lk for lk in dit.lookups(site)}[name]
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
    }
    if not ldap_uri.startswith("ldapi:"):
        settings.update({"start_tls": "yes", "tls_ca_cert_file": facts.CA_CERT,
                         "tls_require_cert": "yes"})
    return settings


def files(site: Site, host: str, ldap_uri: str, secrets: Mapping[str, str]) -> list[FileSpec]:
    relay = None if site.relay.default == "direct" else site.relays[site.relay.default]
    out = [
        FileSpec("/etc/postfix/main.cf", "etc/postfix/main.cf.j2",
                 {"params": list(main_cf(site, host).items())}),
        FileSpec("/etc/postfix/master.cf", "etc/postfix/master.cf.j2",
                 {"services": master_cf(site)}),
        FileSpec("/etc/mailname", "_formats/verbatim.j2", {"text": site.hosts[host].hostname + "\n"}),
    ]
    pw = secrets[facts.secret_service("postfix")]
    for lookup in dit.lookups(site):
        if lookup.service != "postfix":
            continue
        out.append(FileSpec(f"{LDAP_DIR}/{lookup.name}.cf", "_formats/keyvalue.j2",
                            {"settings": list(ldap_table(site, lookup.name, ldap_uri, pw).items()),
                             "header": f"Postfix LDAP table {lookup.name} (ldap_table(5))"},
                            0o640, "root", "postfix"))
    if relay and relay.auth:
        out.append(FileSpec("/etc/postfix/sasl_passwd", "_formats/table.j2",
                            {"rows": [(relay_target(relay),
                                       f"{relay.auth.user}:{secrets[relay.auth.password_secret]}")]},
                            0o600))
    if relay and relay.tls_name:
        level = "secure" if relay.tls != "encrypt" else "encrypt"
        out.append(FileSpec("/etc/postfix/tls_policy", "_formats/table.j2",
                            {"rows": [(relay_target(relay), f"{level} match={relay.tls_name}")]}))
    if relay and relay.ca_secret:
        out.append(FileSpec("/etc/postfix/relay-ca.crt", "_formats/verbatim.j2",
                            {"text": secrets[relay.ca_secret]}))
    return out
