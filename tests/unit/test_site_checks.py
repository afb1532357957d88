"""The site file's loader and checks: every mistake gets FILE:LINE: key.path: message."""

from __future__ import annotations

import os
import textwrap

import pytest

from mailstack import checks
from mailstack.errors import InputError
from mailstack.secrets import SecretStore
from mailstack.site.load import load_site
from tests.conftest import example_text

GOOD = textwrap.dedent("""\
    site: krasnoyarsk
    domains: [krasnoyarsk.example.org]
    hosts:
      mail: {hostname: mail.krasnoyarsk.example.org, roles: [ldap, mta, imap]}
    ldap: {base: "dc=krasnoyarsk,dc=example,dc=org"}
    relay: {default: head-office}
    relays:
      head-office: {host: 192.0.2.1, tls: encrypt}
    accounts:
      - {mail: ivan@krasnoyarsk.example.org, name: Ivan Petrov,
         aliases: [postmaster@krasnoyarsk.example.org, abuse@krasnoyarsk.example.org]}
      - {mail: olga@krasnoyarsk.example.org, name: Olga Sidorova}
    """)


def errors_of(path) -> list[str]:
    """Every finding, as the CLI prints it, with the file name made relative."""
    try:
        site = load_site(path)
    except InputError as err:
        return [line.replace(str(path), "site.yml") for line in str(err).splitlines()]
    found = checks.run(site, SecretStore(path.parent / "secrets"))
    return [str(f).replace(str(path), "site.yml") for f in found]


def test_the_bundled_example_is_clean(example) -> None:
    assert errors_of(example) == []


def test_good_minimal_site(write_site) -> None:
    assert errors_of(write_site(GOOD)) == []


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("relay: {default: head-office}", "relya: {default: head-office}",
     ["site.yml:6: relya: unknown key; did you mean 'relay'?"]),
    ("tls: encrypt}", "tls: encrypt, password: hunter2}",
     ["site.yml:8: relays.head-office.password: a plaintext secret does not belong in the site "
      "file: put it in a file of the secrets folder and name that file here instead"]),
    ("tls: encrypt}", "tls: encrypted}",
     ["site.yml:8: relays.head-office.tls: expected one of 'verify', 'encrypt', 'wrapper', "
      "got 'encrypted'; did you mean 'encrypt'?"]),
    ("{host: 192.0.2.1,", "{host: 192.0.2.1, port: '25',",
     ["site.yml:8: relays.head-office.port: expected an integer, got '25'"]),
    ("domains: [krasnoyarsk.example.org]", "domains: krasnoyarsk.example.org",
     ["site.yml:2: domains: expected a list, got 'krasnoyarsk.example.org'"]),
    ("site: krasnoyarsk", "site: Krasnoyarsk Office",
     ["site.yml:1: site: 'Krasnoyarsk Office' does not match ^[a-z0-9][a-z0-9-]*$"]),
    ("ldap: {base: \"dc=krasnoyarsk,dc=example,dc=org\"}\n", "",
     ["site.yml:1: (top): missing required key 'ldap'"]),
    ("relay: {default: head-office}", "relay: {default: head-office}\nrelay: {default: direct}",
     ["site.yml:7: relay: duplicate key (YAML keeps only the last one)"]),
    ("site: krasnoyarsk", "site: [krasnoyarsk",
     ["site.yml:2: (top): YAML syntax error: did not find expected ',' or ']'"]),
])
def test_load_errors(write_site, old: str, new: str, expected: list[str]) -> None:
    assert old in GOOD
    assert errors_of(write_site(GOOD.replace(old, new, 1))) == expected


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("dc=krasnoyarsk,dc=example,dc=org", "dc=krasnoyarsk,,dc=org",
     ["site.yml:5: ldap.base: 'dc=krasnoyarsk,,dc=org' is not a valid DN (RFC 4514): "
      "',dc' is not an attribute type"]),
    ("default: head-office", "default: head-ofice",
     ["site.yml:6: relay.default: no relay named 'head-ofice' under relays:; "
      "did you mean 'head-office'?"]),
    ("olga@krasnoyarsk.example.org, name", "ivan@krasnoyarsk.example.org, name",
     ["site.yml:12: accounts[1].mail: duplicate address 'ivan@krasnoyarsk.example.org' "
      "(first used at line 10)"]),
    ("olga@krasnoyarsk.example.org, name", "olga@@krasnoyarsk.example.org, name",
     ["site.yml:12: accounts[1].mail: 'olga@@krasnoyarsk.example.org' is not a valid mail "
      "address"]),
    ("olga@krasnoyarsk.example.org, name", "olga@elsewhere.example.org, name",
     ["site.yml:12: accounts[1].mail: 'olga@elsewhere.example.org' is not in one of the site's "
      "domains (krasnoyarsk.example.org)"]),
    ("Olga Sidorova}", "Olga Sidorova}\naliases:\n  - {address: office@krasnoyarsk.example.org,"
     " to: [olgaa@krasnoyarsk.example.org]}",
     ["site.yml:14: aliases[0].to[0]: 'olgaa@krasnoyarsk.example.org' points nowhere: no "
      "account or alias has that address; did you mean 'olga@krasnoyarsk.example.org'?"]),
    ("name: Ivan Petrov", 'name: "Ivan\\nPetrov"',
     ["site.yml:10: accounts[0].name: contains a line break or control character, which would "
      "break the configuration files it goes into"]),
    ("{host: 192.0.2.1, tls: encrypt}", "{host: 192.0.2.1, tls: verify}",
     ["site.yml:8: relays.head-office.tls_name: the relay is named by IP address and tls is "
      "'verify': set tls_name to the name its certificate carries"]),
    ("{host: 192.0.2.1, tls: encrypt}", "{host: mail.krasnoyarsk.example.org, tls: encrypt}",
     ["site.yml:8: relays.head-office.host: 'mail.krasnoyarsk.example.org' is this site "
      "itself: mail sent there would loop"]),
    ("aliases: [postmaster@krasnoyarsk.example.org, abuse@krasnoyarsk.example.org]",
     "aliases: []",
     ["site.yml:2: domains[0]: no one receives abuse@krasnoyarsk.example.org (RFC 2142: where "
      "the Internet reports abuse): add it to the aliases of the account that reads it",
      "site.yml:2: domains[0]: no one receives postmaster@krasnoyarsk.example.org (RFC 5321 "
      "requires it): add it to the aliases of the account that reads it"]),
    ("Olga Sidorova}", "Olga Sidorova}\nverify: {probe: olgа@krasnoyarsk.example.org}",
     ["site.yml:13: verify.probe: 'olgа@krasnoyarsk.example.org' is not an account of the "
      "site: verify's probe account is created like any account; did you mean "
      "'olga@krasnoyarsk.example.org'?"]),
    ('roles: [ldap, mta, imap]}\nldap: {base: "dc=krasnoyarsk,dc=example,dc=org"}',
     'roles: [mta, imap]}\n  dir: {hostname: dir.krasnoyarsk.example.org, roles: [ldap]}\n'
     'ldap: {base: "dc=krasnoyarsk,dc=example,dc=org", network: false}',
     ["site.yml:6: ldap.network: host mail reads the directory over the network: slapd must "
      "listen on port 389 (remove the key)"]),
])
def test_check_findings(write_site, old: str, new: str, expected: list[str]) -> None:
    assert old in GOOD
    assert errors_of(write_site(GOOD.replace(old, new, 1))) == expected


def test_missing_and_unprotected_secrets(write_site, tmp_path) -> None:
    path = write_site(GOOD)
    os.remove(tmp_path / "secrets/ldap/postfix")
    (tmp_path / "secrets/ldap/dovecot").chmod(0o644)
    secrets = tmp_path / "secrets"
    assert errors_of(path) == [
        f"site.yml:5: ldap: {secrets}/ldap/dovecot: secret 'ldap/dovecot' has mode 0644; others "
        f"can read it: chmod 600 {secrets}/ldap/dovecot (or encrypt it with ansible-vault)",
        f"site.yml:5: ldap: secret 'ldap/postfix' is missing: expected the file "
        f"{secrets}/ldap/postfix; `mailstack secrets SITE` creates it",
    ]


def test_relay_credentials_are_external_secrets(write_site, tmp_path) -> None:
    text = GOOD.replace("{host: 192.0.2.1, tls: encrypt}",
                        "{host: 192.0.2.1, tls: verify, tls_name: relay.example.net,\n"
                        "                 auth: {user: branch, password_secret: head-office}}")
    assert errors_of(write_site(text)) == [
        f"site.yml:9: relays.head-office.auth.password_secret: secret 'head-office' is missing: "
        f"expected the file {tmp_path}/secrets/head-office; put it there yourself (it cannot be "
        "generated)"]


HIDES = '''ldap:
  base: "dc=krasnoyarsk,dc=example,dc=org"
  acl:
    - to * by dn.exact="cn=admin,dc=krasnoyarsk,dc=example,dc=org" write
        by dn.exact="cn=dovecot,ou=applications,dc=krasnoyarsk,dc=example,dc=org" read
        by * none
'''


def test_acl_rule_that_hides_postfix_lookups(write_site) -> None:
    text = GOOD.replace('ldap: {base: "dc=krasnoyarsk,dc=example,dc=org"}\n', HIDES)
    found = errors_of(write_site(text))
    post = "cn=postfix,ou=applications,dc=krasnoyarsk,dc=example,dc=org"
    dove = "cn=dovecot,ou=applications,dc=krasnoyarsk,dc=example,dc=org"
    people = "ou=people,dc=krasnoyarsk,dc=example,dc=org"
    assert found == [
        f"site.yml:8: ldap.acl[0]: warning: {dove} may read entry of cn=default,ou=policies,"
        "dc=krasnoyarsk,dc=example,dc=org, which least privilege forbids (ppolicy reads its "
        "policy itself; no one else needs it)",
        *(f"site.yml:8: ldap.acl[0]: warning: {dove} may read userPassword of "
          f"mail={who}@krasnoyarsk.example.org,{people}, which least privilege forbids "
          "(services bind as the user; they never read passwords)" for who in ("ivan", "olga")),
        *(f"site.yml:8: ldap.acl[0]: {post} cannot do what postfix's lookup {name} needs: "
          f"search on entry of ou={ou},dc=krasnoyarsk,dc=example,dc=org ('by * none' of this "
          "rule decides)"
          for name, ou in (("locked_accounts", "people"), ("locked_aliases", "aliases"),
                           ("sender_login_accounts", "people"), ("sender_login_aliases", "aliases"),
                           ("virtual_alias_groups", "groups"), ("virtual_alias_maps", "aliases"),
                           ("virtual_mailbox_maps", "people"))),
        "site.yml:8: ldap.acl[0]: warning: this rule catches every entry and attribute, so none "
        "of the generated least-privilege rules after it ever applies (add 'by * break' to let "
        "them)",
    ]


def test_acl_dead_clause_and_parse_error(write_site) -> None:
    text = GOOD.replace('ldap: {base: "dc=krasnoyarsk,dc=example,dc=org"}\n',
                        'ldap:\n  base: "dc=krasnoyarsk,dc=example,dc=org"\n  acl:\n'
                        '    - to attrs=cn by * none by * read\n')
    assert errors_of(write_site(text)) == [
        "site.yml:8: ldap.acl[0]: 'by * read' can never match: 'by * none' before it in this "
        "rule catches everyone it would"]
    text = text.replace("by * none by * read", "by * reed")
    assert errors_of(write_site(text)) == [
        "site.yml:8: ldap.acl[0]: cannot read this rule: 'reed' is not an access level"]


def test_an_admin_rule_with_break_keeps_the_generated_rules(write_site) -> None:
    text = GOOD.replace('ldap: {base: "dc=krasnoyarsk,dc=example,dc=org"}\n',
                        'ldap:\n  base: "dc=krasnoyarsk,dc=example,dc=org"\n  acl:\n'
                        '    - to * by dn.exact="cn=backup,dc=krasnoyarsk,dc=example,dc=org" read'
                        ' by * break\n')
    assert errors_of(write_site(text)) == []


def test_example_text_is_the_file_users_copy() -> None:
    assert "site: krasnoyarsk" in example_text()
