"""The LDAP modules of the collection mailstack.mail without a slapd: LDIF, comparison, plans."""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path

import ldap3
import pytest

from mailstack import resources
from mailstack.ldap import ldif
from mailstack.plan import dit
from mailstack.site.load import load_site


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The modules import their helpers by the collection's name, as Ansible ships them to the host.
utils = _load("ansible_collections.mailstack.mail.plugins.module_utils.ldap",
              resources.COLLECTION / "plugins" / "module_utils" / "ldap.py")
reconcile = _load("ansible_collections.mailstack.mail.plugins.module_utils.reconcile",
                  resources.COLLECTION / "plugins" / "module_utils" / "reconcile.py")
entries = _load("mailstack_ldap_entries", resources.MODULES / "ldap_entries.py")
passwords = _load("mailstack_ldap_password", resources.MODULES / "ldap_password.py")

ORDERED = frozenset({"olcaccess", "olcdbindex"})


def attrs(*pairs: tuple[str, str]) -> dict:
    return utils.group_attrs((a, v.encode()) for a, v in pairs)


# -- LDIF ----------------------------------------------------------------------------------

def test_parse_ldif_reads_folded_base64_and_comments() -> None:
    secret = base64.b64encode(b" leading space").decode()
    text = (
        "version: 1\n"
        "# a comment\n"
        "#  folded comment\n"
        "  continued\n"
        "dn: cn=a,dc=example,dc=org\n"
        "objectClass: top\n"
        "description: one long\n"
        "  line\n"
        f"userPassword:: {secret}\n"
        "\n\n"
        "dn: cn=b,dc=example,dc=org\n"
        "cn: b\n"
    )
    parsed = utils.parse_ldif(text)
    assert parsed == [
        ("cn=a,dc=example,dc=org", [("objectClass", b"top"), ("description", b"one long line"),
                                    ("userPassword", b" leading space")]),
        ("cn=b,dc=example,dc=org", [("cn", b"b")]),
    ]


@pytest.mark.parametrize("text, message", [
    ("cn: x\n", "line 1: an entry must start with dn:, not cn:"),
    ("dn: cn=x\nchangetype: modify\n", "line 2: change records are not supported"),
    ("dn: cn=x\nphoto:< file:///x\n", "line 2: URL values (photo:<) are not supported"),
    (" folded\n", "line 1: continuation line without a line to continue"),
    ("dn: cn=x\nnot an attribute\n", "line 2: expected 'attribute: value'"),
])
def test_parse_ldif_refuses_what_mailstack_never_writes(text: str, message: str) -> None:
    with pytest.raises(utils.LdifError, match=message.replace("(", r"\(").replace(")", r"\)")):
        utils.parse_ldif(text)


def test_parse_ldif_reads_the_rendered_tree_back(example: Path) -> None:
    site = load_site(example)
    rendered = ldif.dumps(dit.entries(site), header=["test"])
    parsed = utils.parse_ldif(rendered)
    assert [dn for dn, _ in parsed] == [str(e.dn) for e in dit.entries(site)]
    first = dit.entries(site)[-1]
    assert parsed[-1][1] == [(a, v.encode()) for a, v in first.attrs]


def test_norm_dn_ignores_case_and_spaces() -> None:
    assert utils.norm_dn("CN=Admin, DC=Example,DC=org") == utils.norm_dn("cn=admin,dc=example,dc=org")


# -- comparing values ----------------------------------------------------------------------

def test_same_values_order_matters_only_for_ordered_attributes() -> None:
    assert utils.same_values("mail", [b"a", b"b"], [b"b", b"a"], ORDERED)
    assert not utils.same_values("olcDbIndex", [b"a eq", b"b eq"], [b"b eq", b"a eq"], ORDERED)
    assert not utils.same_values("olcModuleLoad", [b"{0}x", b"{1}y"], [b"{0}y", b"{1}x"], ORDERED)
    assert utils.same_values("objectClass", [b"inetOrgPerson"], [b"inetorgperson"], ORDERED)
    assert not utils.same_values("cn", [b"Ivan"], [b"ivan"], ORDERED)


def test_changes_replace_only_what_differs_and_never_a_protected_attribute() -> None:
    want = attrs(("objectClass", "inetOrgPerson"), ("cn", "Ivan Petrov"), ("sn", "Petrov"),
                 ("userPassword", "{CRYPT}!placeholder"))
    have = attrs(("objectClass", "inetorgperson"), ("cn", "Ivan"), ("sn", "Petrov"),
                 ("userPassword", "{ARGON2}set-by-rfc3062"), ("telephoneNumber", "1"))
    changes = entries.attribute_changes("cn=x", want, have, ORDERED, False,
                                        frozenset({"userpassword"}))
    assert changes == {"cn": [(ldap3.MODIFY_REPLACE, [b"Ivan Petrov"])]}


def test_config_changes_delete_what_the_render_lacks_and_append_ordered_values() -> None:
    want = attrs(("olcModuleLoad", "{0}back_mdb"), ("olcModuleLoad", "{1}argon2"),
                 ("olcLogLevel", "stats"))
    have = attrs(("olcModuleLoad", "{0}back_mdb"), ("olcLogLevel", "stats"),
                 ("olcLogLevel", "acl"), ("olcDbCheckpoint", "512 30"))
    changes = entries.attribute_changes("cn=config", want, have, ORDERED, True, frozenset())
    assert changes == {
        "olcModuleLoad": [(ldap3.MODIFY_ADD, [b"{1}argon2"])],
        "olcLogLevel": [(ldap3.MODIFY_REPLACE, [b"stats"])],
        "olcDbCheckpoint": [(ldap3.MODIFY_DELETE, [])],
    }


def test_reordered_acl_is_replaced_as_a_whole() -> None:
    want = attrs(("olcAccess", "{0}to * by self read"), ("olcAccess", "{1}to * by * none"))
    have = attrs(("olcAccess", "{0}to * by * none"), ("olcAccess", "{1}to * by self read"))
    changes = entries.attribute_changes("olcDatabase={1}mdb,cn=config", want, have, ORDERED,
                                        True, frozenset())
    assert changes == {"olcAccess": [(ldap3.MODIFY_REPLACE,
                                      [b"{0}to * by self read", b"{1}to * by * none"])]}


def test_a_module_cannot_be_unloaded_online() -> None:
    want = attrs(("olcModuleLoad", "{0}back_mdb"), ("olcModuleLoad", "{1}argon2"))
    have = attrs(("olcModuleLoad", "{0}back_mdb"), ("olcModuleLoad", "{1}pw-sha2"))
    with pytest.raises(entries.Refused, match="slapd cannot unload a module online"):
        entries.attribute_changes("cn=module{0},cn=config", want, have, ORDERED, True, frozenset())


# -- change plans against a pretend slapd -----------------------------------------------------

SCHEMA = "cn=schema,cn=config"


def schema(index: int, name: str, *types: str) -> tuple[str, dict]:
    return (f"cn={{{index}}}{name},{SCHEMA}",
            attrs(("objectClass", "olcSchemaConfig"), ("cn", f"{{{index}}}{name}"),
                  *(("olcAttributeTypes", f"{{{i}}}{t}") for i, t in enumerate(types))))


def config(*schemas: tuple[str, dict], loglevel: str = "stats") -> list[tuple[str, dict]]:
    return [
        ("cn=config", attrs(("objectClass", "olcGlobal"), ("cn", "config"),
                            ("olcLogLevel", loglevel))),
        (SCHEMA, attrs(("objectClass", "olcSchemaConfig"), ("cn", "schema"))),
        *schemas,
        ("olcDatabase={1}mdb,cn=config", attrs(("objectClass", "olcMdbConfig"),
                                               ("olcDatabase", "{1}mdb"))),
    ]


def plan_config(monkeypatch: pytest.MonkeyPatch, wanted: list, live: list) -> tuple:
    live = [(dn, {**a, "entryuuid": ("entryUUID", [b"x"])}) for dn, a in live]
    live[1] = (SCHEMA, {**live[1][1], "olcattributetypes": ("olcAttributeTypes", [b"built-in"])})
    monkeypatch.setattr(entries, "search_subtree", lambda conn, base: live)
    return entries.plan_config(None, wanted, ORDERED)


def test_config_plan_is_empty_when_slapd_holds_the_render(monkeypatch) -> None:
    want = config(schema(0, "core", "( 2.5.4.0 )"), schema(1, "courier", "( 1.3 )"))
    assert plan_config(monkeypatch, want, want) == ([], [], [])


def test_config_plan_appends_a_new_schema_and_changes_values(monkeypatch) -> None:
    core_schema, courier = schema(0, "core", "( 2.5.4.0 )"), schema(1, "courier", "( 1.3 )")
    adds, modifies, unmanaged = plan_config(
        monkeypatch, config(core_schema, courier, loglevel="acl"), config(core_schema))
    assert [dn for dn, _ in adds] == [courier[0]]
    assert modifies == [("cn=config", {"olcLogLevel": [(ldap3.MODIFY_REPLACE, [b"acl"])]})]
    assert unmanaged == []


def test_config_plan_refuses_to_drop_a_loaded_schema(monkeypatch) -> None:
    core_schema, courier = schema(0, "core", "( 2.5.4.0 )"), schema(1, "courier", "( 1.3 )")
    with pytest.raises(entries.Refused, match=r"slapd has schema courier loaded, which the "
                       r"rendered configuration no longer has: slapd 2\.5 cannot delete a schema "
                       r"online"):
        plan_config(monkeypatch, config(core_schema), config(core_schema, courier))


def test_config_plan_refuses_to_change_a_loaded_schema(monkeypatch) -> None:
    old, new = schema(1, "courier", "( 1.3 )"), schema(1, "courier", "( 1.3 NAME 'x' )")
    with pytest.raises(entries.Refused, match="cannot change or delete a loaded schema online"):
        plan_config(monkeypatch, config(schema(0, "core"), new), config(schema(0, "core"), old))


def test_data_plan_adds_missing_entries_and_leaves_passwords(monkeypatch) -> None:
    live = {
        "dc=example,dc=org": attrs(("objectClass", "organization"), ("o", "example")),
        "cn=postfix,dc=example,dc=org": attrs(("objectClass", "applicationProcess"),
                                               ("cn", "postfix"), ("userPassword", "{ARGON2}x")),
    }
    monkeypatch.setattr(entries, "read_entry", lambda conn, dn: live.get(dn))
    wanted = [
        ("dc=example,dc=org", attrs(("objectClass", "organization"), ("o", "Example"))),
        ("cn=postfix,dc=example,dc=org", attrs(("objectClass", "applicationProcess"),
                                                ("cn", "postfix"),
                                                ("userPassword", dit.PLACEHOLDER_PASSWORD))),
        ("cn=dovecot,dc=example,dc=org", attrs(("objectClass", "applicationProcess"),
                                                ("cn", "dovecot"),
                                                ("userPassword", dit.PLACEHOLDER_PASSWORD))),
    ]
    adds, modifies, _ = entries.plan_data(None, wanted, ORDERED, frozenset({"userpassword"}))
    assert [dn for dn, _ in adds] == ["cn=dovecot,dc=example,dc=org"]
    assert adds[0][1]["userpassword"][1] == [dit.PLACEHOLDER_PASSWORD.encode()]
    assert modifies == [("dc=example,dc=org", {"o": [(ldap3.MODIFY_REPLACE, [b"Example"])]})]


def test_module_defaults_match_the_plan() -> None:
    """The placeholder the password module looks for is the one the DIT is rendered with."""
    assert passwords.DOCUMENTATION.count(dit.PLACEHOLDER_PASSWORD) == 1
    assert f'default="{dit.PLACEHOLDER_PASSWORD}"' in Path(passwords.__file__).read_text()


def test_planned_changes_read_as_ldif_with_passwords_hidden() -> None:
    adds = [("cn=petr,dc=x", attrs(("objectClass", "person"), ("cn", "petr"),
                                   ("userPassword", "{SSHA}abc")))]
    modifies = [("cn=config", {"olcRootPW": [(ldap3.MODIFY_REPLACE, [b"{SSHA}x"])],
                               "olcLogLevel": [(ldap3.MODIFY_REPLACE, [b"stats"])]})]
    assert entries.change_ldif(adds, modifies).splitlines() == [
        "dn: cn=petr,dc=x", "changetype: add", "objectClass: person", "cn: petr",
        "userPassword: (secret)", "",
        "dn: cn=config", "changetype: modify", "replace: olcRootPW", "olcRootPW: (secret)", "-",
        "replace: olcLogLevel", "olcLogLevel: stats", "-"]


def test_a_module_is_loaded_before_the_entries_that_need_it() -> None:
    """Upgrading a live slapd to ppolicy: the olcModuleLoad append comes before the overlay's
    add (slapd refuses olcPPolicyConfig until ppolicy.so is loaded), the rest after the adds."""
    calls: list[tuple[str, str]] = []

    class Conn:
        def add(self, dn, classes, body):
            calls.append(("add", dn))
            return True

        def modify(self, dn, changes):
            calls.append(("modify", dn))
            return True

    overlay = "olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config"
    mdb = "olcDatabase={1}mdb,cn=config"
    module = "cn=module{0},cn=config"
    entries.apply_changes(Conn(), [(overlay, attrs(("objectClass", "olcPPolicyConfig")))],
                          [(mdb, {"olcRootDN": []}), (module, {"olcModuleLoad": []})])
    assert calls == [("modify", module), ("add", overlay), ("modify", mdb)]
