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
from mailstack.plan import FileSpec, acl, dit, layout
from mailstack.site.model import Site

MODULES = ("back_mdb", "pw-sha2", "argon2", "ppolicy")
DB_MAX_SIZE = 1 << 30


def _ordered(attr: str, values: list[str]) -> list[tuple[str, str]]:
    return [(attr, f"{{{i}}}{v}") for i, v in enumerate(values)]


def config_entries(site: Site, host: str, secrets: Mapping[str, str]) -> list[Entry | str]:
    """cn=config as entries; ``include:`` lines (strings) load Debian's own schema files."""
    base = dit.base(site)
    prof = dit.profile(site)
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
        )),
        Entry(dn("cn=module{0},cn=config"), (
            ("objectClass", "olcModuleList"), ("cn", "module{0}"),
            ("olcModulePath", "/usr/lib/ldap"),
            *_ordered("olcModuleLoad", list(MODULES)),
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
            ("olcLastMod", "TRUE"),
            ("olcSecurity", SECURITY),
            *_ordered("olcAccess", acl.rules(site)),
        )),
        Entry(dn("olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config"), (
            ("objectClass", "olcOverlayConfig"), ("objectClass", "olcPPolicyConfig"),
            ("olcOverlay", "{0}ppolicy"),
            ("olcPPolicyDefault", str(dit.policy_dn(site))),
            # a cleartext userPassword written by a plain modify is hashed (olcPasswordHash)
            ("olcPPolicyHashCleartext", "TRUE"),
            ("olcPPolicyUseLockout", "FALSE"),
        )),
    ]
    return out


def serves_network(site: Site) -> bool:
    """Whether slapd listens on port 389: when the site says so, or when a host without the
    ldap role reads the directory. Otherwise every consumer is on the directory's host and
    uses ldapi:/// (Postfix's tables, Dovecot's passdb and userdb, apply, verify)."""
    if site.ldap.network is not None:
        return site.ldap.network
    return any("ldap" not in h.roles for h in site.hosts.values())


def listen_uris(site: Site) -> str:
    """SLAPD_SERVICES in /etc/default/slapd."""
    return "ldap:/// ldapi:///" if serves_network(site) else "ldapi:///"


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
        FileSpec(layout.DIT_LDIF, "_formats/ldif.j2",
                 {"header": ["The directory tree; passwords are set with RFC 3062 at apply"],
                  "entries": dit.entries(site)}, 0o600),
        FileSpec(layout.ACL_EXPECTATIONS, "_formats/verbatim.j2", {"text": expectations_json(site)}),
        FileSpec("/etc/default/slapd", "etc/default/slapd.j2",
                 {"services": listen_uris(site), "options": ""}),
        FileSpec(layout.slapd_key(host), "_formats/verbatim.j2",
                 {"text": secrets[layout.secret_host_key(host)]}, 0o640, "root", "openldap"),
    ]
    for name in OWN_SCHEMAS:
        if name in dit.profile(site).schemas:
            out.append(FileSpec(f"{layout.SCHEMA_DIR}/{name}.ldif", "_formats/verbatim.j2",
                                {"text": shipped_schema(name)}))
    return out
