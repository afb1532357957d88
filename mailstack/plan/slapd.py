"""slapd: the cn=config LDIF, the DIT LDIF, the Courier schema and the ACL expectations.

The role builds ``/etc/ldap/slapd.d`` offline from ``config.ldif`` (``slapadd -n0``) and loads
``dit.ldif``; both are placed under ``/var/lib/mailstack/ldap/`` so their paths mirror the host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources

from mailstack.ldap.dn import dn
from mailstack.ldap.ldif import Entry
from mailstack.plan import FileSpec, acl, dit, layout, topology
from mailstack.site.model import Site

MODULES = ("back_mdb", "pw-sha2", "argon2", "ppolicy")
PROVIDER_MODULES = ("syncprov",)
"""Loaded on a provider with replicas (after MODULES: an applied site loads it online)."""
REPLICATION_INDICES = ("entryCSN", "entryUUID")
"""syncrepl's own equality indices, on the provider and its replicas (a missing one is silent
unless loglevel filter is on)."""
SYNCREPL_RETRY = "5 10 60 +"
"""A replica retries every 5 s ten times, then every 60 s, for ever."""


def is_replica(site: Site, host: str) -> bool:
    return "ldap-replica" in site.hosts[host].roles


def has_replicas(site: Site) -> bool:
    return bool(topology.replicas(site))


def replicator_dn(site: Site) -> str:
    """Whom a replica binds as (SASL EXTERNAL: its host certificate's subject, mapped by
    olcAuthzRegexp); the identity has no entry and no password."""
    return str(dit.service_dn(site, "replicator"))


def authz_regexps(site: Site) -> list[str]:
    """olcAuthzRegexp: each replica's certificate subject (cn=<host name>, as slapd sees it:
    lower case) becomes the replication identity; nothing else maps to it."""
    out = []
    for name in topology.replicas(site):
        subject = "cn=" + site.hosts[name].hostname.lower()
        # a host name holds letters, digits, dashes and dots; [.] needs no escaping
        pattern = "^" + subject.replace(".", "[.]") + "$"
        out.append(f'"{pattern}" "{replicator_dn(site)}"')
    return out


def syncrepl(site: Site, host: str) -> str:
    """The replica's olcSyncrepl: refreshAndPersist from the provider over StartTLS, bound by
    SASL EXTERNAL with the host's certificate (no password anywhere)."""
    provider = site.hosts[topology.provider(site)].hostname
    return " ".join((
        "rid=001", f"provider=ldap://{provider}", "bindmethod=sasl", "saslmech=EXTERNAL",
        "starttls=critical", f"tls_cert={layout.host_cert(host)}",
        f"tls_key={layout.slapd_key(host)}", f"tls_cacert={layout.CA_CERT}",
        "tls_reqcert=demand", f'searchbase="{dit.base(site)}"', "scope=sub",
        "type=refreshAndPersist", f'retry="{SYNCREPL_RETRY}"', "timeout=3",
        "network-timeout=3", "schemachecking=on"))
DB_MAX_SIZE = 1 << 30


def _ordered(attr: str, values: list[str]) -> list[tuple[str, str]]:
    return [(attr, f"{{{i}}}{v}") for i, v in enumerate(values)]


def config_entries(site: Site, host: str, secrets: Mapping[str, str]) -> list[Entry | str]:
    """cn=config as entries; ``include:`` lines (strings) load Debian's own schema files."""
    base = dit.base(site)
    prof = dit.profile(site)
    replica = is_replica(site, host)
    provider = not replica and has_replicas(site)
    replication = provider or replica
    out: list[Entry | str] = [
        Entry(dn("cn=config"), (
            ("objectClass", "olcGlobal"), ("cn", "config"),
            ("olcArgsFile", f"{layout.SLAPD_RUN_DIR}/slapd.args"),
            ("olcPidFile", f"{layout.SLAPD_RUN_DIR}/slapd.pid"),
            *(("olcLogLevel", level) for level in site.ldap.loglevel),
            ("olcTLSCACertificateFile", layout.CA_CERT),
            ("olcTLSCertificateFile", layout.host_cert(host)),
            ("olcTLSCertificateKeyFile", layout.slapd_key(host)),
            ("olcTLSProtocolMin", "3.3"),
            # a replica shows its certificate (SASL EXTERNAL); "demand" would refuse every
            # client without one, Postfix and Dovecot included
            *((("olcTLSVerifyClient", "try"),) if provider else ()),
            *(_ordered("olcAuthzRegexp", authz_regexps(site)) if provider else ()),
        )),
        Entry(dn("cn=module{0},cn=config"), (
            ("objectClass", "olcModuleList"), ("cn", "module{0}"),
            ("olcModulePath", "/usr/lib/ldap"),
            *_ordered("olcModuleLoad", list(MODULES) + (list(PROVIDER_MODULES) if provider
                                                        else [])),
        )),
        Entry(dn("cn=schema,cn=config"), (("objectClass", "olcSchemaConfig"), ("cn", "schema"))),
    ]
    for schema in prof.schemas:
        directory = layout.SCHEMA_DIR if schema in OWN_SCHEMAS else layout.DEBIAN_SCHEMA_DIR
        out.append(f"include: file://{directory}/{schema}.ldif")
    out += [
        Entry(dn("olcDatabase={-1}frontend,cn=config"), (
            ("objectClass", "olcDatabaseConfig"), ("objectClass", "olcFrontendConfig"),
            ("olcDatabase", "{-1}frontend"),
            ("olcPasswordHash", "{" + site.ldap.password_hash + "}"),
            ("olcSizeLimit", "500"),
            *_ordered("olcAccess", acl.frontend_rules()),
        )),
        Entry(dn("olcDatabase={0}config,cn=config"), (
            ("objectClass", "olcDatabaseConfig"), ("olcDatabase", "{0}config"),
            *_ordered("olcAccess", [acl.root_rule()]),
        )),
        Entry(dn("olcDatabase={1}mdb,cn=config"), (
            ("objectClass", "olcDatabaseConfig"), ("objectClass", "olcMdbConfig"),
            ("olcDatabase", "{1}mdb"),
            ("olcDbDirectory", layout.SLAPD_DB_DIR),
            ("olcSuffix", str(base)),
            # root over ldapi: apply adds entries with the placeholder password, which
            # pwdCheckQuality 2 refuses to users; ppolicy exempts the rootDN (and, seen on 2.5,
            # whoever may manage userPassword). No olcRootPW (slapd refuses one for a rootDN
            # outside the suffix): tools that need a password bind as dit.admin_dn
            # (ldap.root_password)
            ("olcRootDN", layout.ROOT_PEERCRED_DN),
            ("olcDbMaxSize", str(DB_MAX_SIZE)),
            *(("olcDbIndex", f"{attr} eq") for attr in dit.index_attributes(site)),
            *(("olcDbIndex", f"{attr} eq") for attr in REPLICATION_INDICES if replication),
            ("olcLastMod", "TRUE"),
            # the replication identity reads everything, without the default size limit (a
            # consumer stopped at 500 entries and retried for ever)
            *((("olcLimits", f'{{0}}dn.exact="{replicator_dn(site)}" size=unlimited '
                             "time=unlimited"),) if provider else ()),
            ("olcSecurity", SECURITY),
            *((("olcSyncrepl", "{0}" + syncrepl(site, host)),
               # writes (a Password Modify) answer Referral (10) to the provider, not 53
               ("olcUpdateRef", f"ldap://{site.hosts[topology.provider(site)].hostname}"))
              if replica else ()),
            *_ordered("olcAccess", acl.rules(site)),
        )),
    ]
    if replica:
        # a replica's tree is the provider's: no overlay writes to it (ppolicy checks
        # passwords where they are changed, on the provider)
        return out
    out += [
        Entry(dn("olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config"), (
            ("objectClass", "olcOverlayConfig"), ("objectClass", "olcPPolicyConfig"),
            ("olcOverlay", "{0}ppolicy"),
            ("olcPPolicyDefault", str(dit.policy_dn(site))),
            # a cleartext userPassword written by a plain modify is hashed (olcPasswordHash)
            ("olcPPolicyHashCleartext", "TRUE"),
            ("olcPPolicyUseLockout", "FALSE"),
        )),
    ]
    if provider:
        out.append(Entry(dn("olcOverlay={1}syncprov,olcDatabase={1}mdb,cn=config"), (
            ("objectClass", "olcOverlayConfig"), ("objectClass", "olcSyncProvConfig"),
            ("olcOverlay", "{1}syncprov"),
            ("olcSpCheckpoint", "100 10"),
            ("olcSpSessionlog", "1000"),
        )))
    return out


def serves_network(site: Site) -> bool:
    """Whether slapd listens on port 389: when the site says so, or when a host without the
    ldap role reads the directory. Otherwise every consumer is on the directory's host and
    uses ldapi:/// (Postfix's tables, Dovecot's passdb and userdb, apply, verify)."""
    if site.ldap.network is not None:
        return site.ldap.network
    return any("ldap" not in h.roles for h in site.hosts.values())


def serves_network_on(site: Site, host: str) -> bool:
    """The provider as above; a replica always (the host's own lookups reach it by name, with
    StartTLS, before the provider: plan/hosts.ldap_uri)."""
    return True if is_replica(site, host) else serves_network(site)


def listen_uris(site: Site, host: str | None = None) -> str:
    """SLAPD_SERVICES in /etc/default/slapd."""
    network = serves_network(site) if host is None else serves_network_on(site, host)
    return "ldap:/// ldapi:///" if network else "ldapi:///"


# every operation needs TLS or ldapi (security strength 64 or more), binds included: an
# anonymous search over plain LDAP is refused too ("confidentiality required")
SECURITY = "simple_bind=64 ssf=64"


OWN_SCHEMAS = ("courier", dit.OWN_SCHEMA)
"""Schemas mailstack ships (data/schema/NAME.ldif) rather than Debian."""


def shipped_schema(name: str) -> str:
    return resources.files("mailstack.data").joinpath(f"schema/{name}.ldif").read_text("utf-8")


def expectations_json(site: Site) -> str:
    """acl.matrix as JSON, one row per line (json's C encoder: it skips indent)."""
    rows = [json.dumps(e.__dict__, sort_keys=True) for e in acl.matrix(site)]
    return '{"expectations": [\n' + ",\n".join(rows) + "\n]}\n"


def pickup(path: str) -> str:
    """slapd reads its defaults and its TLS key at start; the LDIF goes in over ldapi; the ACL
    expectations are verify's."""
    if path == "/etc/default/slapd" or path.startswith("/etc/ldap/"):
        return "restart"
    return "ldap" if path.endswith(".ldif") else "none"


def files(site: Site, host: str, secrets: Mapping[str, str]) -> list[FileSpec]:
    """Every file the ldap role of ``host`` receives."""
    out = [
        FileSpec(layout.CONFIG_LDIF, "_formats/ldif.j2",
                 {"header": ["cn=config for slapd, built offline with slapadd -n0 by mailstack"],
                  "entries": config_entries(site, host, secrets)}, 0o600),
        # a replica's tree comes from the provider (syncrepl): apply writes none there
        *([] if is_replica(site, host) else [FileSpec(
            layout.DIT_LDIF, "_formats/ldif.j2",
            {"header": ["The directory tree; passwords are set with RFC 3062 at apply"],
             "entries": dit.entries(site)}, 0o600)]),
        FileSpec(layout.ACL_EXPECTATIONS, "_formats/verbatim.j2", {"text": expectations_json(site)}),
        FileSpec("/etc/default/slapd", "etc/default/slapd.j2",
                 {"services": listen_uris(site, host), "options": ""}),
        FileSpec(layout.slapd_key(host), "_formats/verbatim.j2",
                 {"text": secrets[layout.secret_host_key(host)]}, 0o640, "root", "openldap"),
    ]
    for name in OWN_SCHEMAS:
        if name in dit.profile(site).schemas:
            out.append(FileSpec(f"{layout.SCHEMA_DIR}/{name}.ldif", "_formats/verbatim.j2",
                                {"text": shipped_schema(name)}))
    return out
