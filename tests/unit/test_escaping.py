"""Values that could escape their context: refused at their line where the format has no escape,
escaped where it has one, and ordinary values (Ivan Petrov, O'Brien, Отправленные) accepted.

The live half (tests/live/test_escaping_live.py) reads the escaped values back with the real
parsers: slapadd/slapd, postmap, getmail's own configuration code, systemd.
"""

from __future__ import annotations

import ast
import json
import os

import pytest

from mailstack.cli import main
from mailstack.plan import dovecot
from mailstack.plan import fetch as fetch_plan
from mailstack.site.load import load_site
from tests.conftest import example_text
from tests.unit.test_site_checks import errors_of

EXAMPLE = example_text()
OLGA = "    aliases: [buh@krasnoyarsk.example.org]\n"
FETCH_OLGA = "     user: olga@provider.example, password_secret: provider/olga, keep: false,\n"
RULE = ("a path below the secrets folder of letters, digits, @._+- and /, without '..' (no "
        "absolute paths)")
LOGIN = ("an account's address is its login name, and Dovecot refuses logins with anything but "
         "letters, digits, '.', '-' and '_' (auth_username_chars); make it an alias of an account "
         "instead")
NO_COMMENT = ("an address that starts with '#' cannot be a key of Postfix's {} table: Postfix "
              "reads that line as a comment and would silently leave it out")


def line_of(text: str, snippet: str) -> int:
    """The number of the first line holding ``snippet``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if snippet in line)


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize(("old", "new", "at", "expected"), [
    # main.cf: a parameter name is one word, or it writes another line's setting
    ("  loglevel: [stats]\n", '  loglevel: [stats]\npostfix:\n  main: {"mynetworks = 0/0 #": x}\n',
     '  main:',
     ["site.yml:{line}: postfix.main.mynetworks = 0/0 #: 'mynetworks = 0/0 #' is not a Postfix "
      "parameter name (letters, digits and _)"]),
    ("  loglevel: [stats]\n", "  loglevel: [stats]\npostfix:\n  main: {smtpd_banner: 'x '}\n",
     '  main:',
     ["site.yml:{line}: postfix.main.smtpd_banner: 'x ' starts or ends with a space, which Postfix "
      "strips"]),
    # texthash keys: a leading '#' makes the line a comment (postmap -q finds nothing)
    (OLGA, OLGA + '    send_as: ["#shop@isp.example"]\n',
     'send_as: ["#shop',
     ["site.yml:{line}: accounts[1].send_as[0]: " + NO_COMMENT.format("own_senders")]),
    ('recipients: {"@head-office.example": head-office}',
     'recipients: {"@head-office.example": head-office, "#x@isp.example": head-office}',
     'recipients:',
     ["site.yml:{line}: routes.recipients.#x@isp.example: " + NO_COMMENT.format("transport")]),
    # the SASL map holds user:password
    ("auth: {user: shop@provider.example,", "auth: {user: 'shop:1@provider.example',",
     'auth: {user:',
     ["site.yml:{line}: relays.provider.auth.user: 'shop:1@provider.example' holds ':', which "
      "Postfix's SASL password map uses to split user:password; the relay cannot be given this "
      "login"]),
    ("auth: {user: shop@provider.example,", "auth: {user: ' shop@provider.example',",
     'auth: {user:',
     ["site.yml:{line}: relays.provider.auth.user: ' shop@provider.example' starts or ends with a "
      "space, which Postfix strips"]),
    # a relay names a master.cf service and its socket (Postfix did not start with 100 chars)
    ("relays:\n", f"relays:\n  {'r' * 64}: {{host: 192.0.2.7, tls: encrypt}}\n",
     "rrrr: {host",
     ["site.yml:{line}: relays." + "r" * 64 + ": a relay name is at most 63 characters (this one "
      "has 64): it names the Postfix service relay-<name>, whose socket private/relay-<name> "
      "must fit a Unix socket path"]),
    # the suffix: slapd's access rules quote it, Postfix strips a space at the end of bind_dn
    ("base: dc=krasnoyarsk,dc=example,dc=org", r"base: 'o=a\"b,dc=example,dc=org'",
     "  base:",
     ["site.yml:{line}: ldap.base: 'o=a\"b' holds '\"', which slapd's access rules cannot "
      "carry (they quote the suffix: slapadd refused the configuration)"]),
    ("base: dc=krasnoyarsk,dc=example,dc=org", r"base: 'dc=krasnoyarsk,dc=example,dc=org\ '",
     "  base:",
     ["site.yml:{line}: ldap.base: the suffix ends with a space, which Postfix strips from the "
      "end of bind_dn (its bind then fails)"]),
    # an account's address names a directory and a file
    (OLGA, OLGA + "  - {mail: ol/../ga@krasnoyarsk.example.org, name: Olga}\n",
     'ol/../ga@',
     ["site.yml:{line}: accounts[2].mail: 'ol/../ga@krasnoyarsk.example.org' is not a valid mail "
      "address"]),
    (OLGA, OLGA + "  - {mail: ol/ga@krasnoyarsk.example.org, name: Olga}\n",
     'ol/ga@',
     ["site.yml:{line}: accounts[2].mail: 'ol/ga@krasnoyarsk.example.org' holds /: " + LOGIN]),
    # secret names are paths below the secrets folder
    ("password_secret: provider/olga", "password_secret: ../../etc/shadow",
     '../../etc/shadow',
     ["site.yml:{line}: fetch[1].password_secret: '../../etc/shadow' is not a valid secret name: "
      + RULE]),
    ("ca_secret: lab/head-office-ca", "ca_secret: /etc/ssl/private/x",
     '/etc/ssl/private/x',
     ["site.yml:{line}: relays.head-office.ca_secret: '/etc/ssl/private/x' is not a valid secret "
      "name: " + RULE]),
    (OLGA, OLGA + "    password_secret: accounts/../../x\n",
     'accounts/../../x',
     ["site.yml:{line}: accounts[1].password_secret: 'accounts/../../x' is not a valid secret name: "
      + RULE]),
    # getmail's parser strips a value's spaces
    (FETCH_OLGA, FETCH_OLGA.replace("user: olga@provider.example", "user: ' olga'"),
     "user: ' olga'",
     ["site.yml:{line}: fetch[1].user: ' olga' starts or ends with a space, which getmail's "
      "configuration parser strips"]),
    (FETCH_OLGA, FETCH_OLGA.replace("user: olga@provider.example", "user: ''"),
     "user: ''",
     ["site.yml:{line}: fetch[1].user: the login name cannot be empty"]),
    ("folders: [INBOX]", "folders: [INBOX, '']",
     "folders: [INBOX, '']",
     ["site.yml:{line}: fetch[1].folders[1]: a folder name cannot be empty"]),
    # systemd unit names: one per mailbox, at most 255 characters
    (FETCH_OLGA, FETCH_OLGA.replace("user: olga@provider.example", "user: " + "o" * 205),
     '{account: olga@',
     ["site.yml:{line}: fetch[1]: the remote mailbox's systemd unit mailstack-fetch@imap-ooooooooooo"
      "oooooooo... would be 256 characters long; systemd allows at most 255: shorten the "
      "user or host"]),
])
def test_a_value_its_file_cannot_carry_is_refused_at_its_line(write_site, old: str, new: str,
                                                               at: str, expected: list[str]
                                                               ) -> None:
    """``at``: a snippet of the line the finding names (the example may grow above it)."""
    text = edit(EXAMPLE, old, new)
    line = str(line_of(text, at))
    assert errors_of(write_site(text)) == [e.replace("{line}", line) for e in expected]


def test_two_remote_mailboxes_that_would_share_a_unit_are_refused(write_site) -> None:
    """user 'shop@provider.example' at host 'pop.provider.example' and user 'shop' at host
    'provider.example-pop.provider.example' both reduce to one instance name."""
    text = edit(EXAMPLE, "protocol: imap, host: imap.provider.example",
                "protocol: pop3, host: provider.example-pop.provider.example")
    text = edit(text, "user: olga@provider.example", "user: shop").replace("folders: [INBOX], ", "")
    first, second = line_of(text, "{account: ivan@"), line_of(text, "{account: olga@")
    assert errors_of(write_site(text)) == [
        f"site.yml:{second}: fetch[1]: this remote mailbox and the one at line {first} would "
        "share the "
        "systemd unit mailstack-fetch@pop3-shop-provider.example-pop.provider.example and its "
        "files (user and host are reduced to a-z, 0-9, '.' and '-' for it)"]


ORDINARY = [
    ("name: Ivan Petrov", "name: Ivan Petrov"),
    ("name: Ivan Petrov", "name: O'Brien"),
    ("name: Ivan Petrov", 'name: "Ivan \\"Vanya\\" Petrov, Jr. #1 = ok"'),
    ("name: Ivan Petrov", "name: Иван Петров"),
    ("name: Ivan Petrov", "name: '#1 <Ivan>; +\\\\ Petrov '"),
    ("folders: [INBOX]", "folders: [INBOX, Отправленные, 'Входящие/Счета', 'a \"b\" \\\\ c']"),
    ("base: dc=krasnoyarsk,dc=example,dc=org", "base: o=Krasnoyarsk Branch,dc=example,dc=org"),
    ("base: dc=krasnoyarsk,dc=example,dc=org",
     r"base: 'o=Krasnoyarsk Branch\, #1 \+ %u\\x,dc=example,dc=org'"),
    ("user: olga@provider.example", "user: 'o%(x)s;l #g=a'"),
    ("aliases: [buh@", "aliases: [o'brien@krasnoyarsk.example.org, a+b=c@krasnoyarsk.example.org, "
                       "'#hash@krasnoyarsk.example.org', buh@"),
]


@pytest.mark.parametrize(("old", "new"), ORDINARY)
def test_ordinary_values_are_accepted(write_site, old: str, new: str) -> None:
    assert errors_of(write_site(edit(EXAMPLE, old, new))) == []


HOSTILE_FOLDERS = ["Отправленные", 'a"b', "c\\d", "x\\", '", __import__("os").system("id"), "',
                   "'single' and \"double\"", "tab\\t not a tab", "%(sender)s"]


def test_getmail_tuples_are_python_literals_that_read_back_exactly(write_site) -> None:
    """getmail eval()s its tuple settings: a folder pasted between quotes ran code (tried with
    getmail 6.18.11: os.system from a folder name). Python's own parser reads them back."""
    folders = ", ".join("'" + f.replace("'", "''") + "'" for f in HOSTILE_FOLDERS)
    site = load_site(write_site(edit(EXAMPLE, "folders: [INBOX]", f"folders: [INBOX, {folders}]")))
    imap = site.fetch[1]
    rc = {name: dict(items) for name, items in fetch_plan.getmailrc(imap)}
    assert ast.literal_eval(rc["retriever"]["mailboxes"]) == ("INBOX", *HOSTILE_FOLDERS)
    assert ast.literal_eval(rc["destination"]["arguments"]) == (
        "-i", "-f", "%(sender)", "--", "olga@krasnoyarsk.example.org")
    assert ast.literal_eval(rc["retriever"]["password_command"])[0] == "/bin/cat"
    # ordinary folders render as before
    plain = load_site(write_site(edit(EXAMPLE, "folders: [INBOX]", "folders: [INBOX, Archive]")))
    assert dict(dict(fetch_plan.getmailrc(plain.fetch[1]))["retriever"])["mailboxes"] == \
        '("INBOX", "Archive", )'


def test_secrets_refuses_a_path_outside_the_folder_before_writing(capsys, write_site,
                                                                  tmp_path) -> None:
    site = write_site(edit(EXAMPLE, OLGA, OLGA + "    password_secret: ../../escaped\n"))
    code = main(["secrets", str(site), "--secrets", str(tmp_path / "fresh" / "secrets")])
    _, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err
    assert err == (f"{site}:54: accounts[1].password_secret: '../../escaped' is not a valid secret "
                   f"name: {RULE}\n")
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "escaped").exists()
    assert not os.path.exists(tmp_path.parent / "escaped")
    code = main(["lab", "secrets", str(site), "--build", str(tmp_path / "build")])
    _, err = capsys.readouterr()
    assert (code, err.splitlines()[0]) == (2, f"{site}:54: accounts[1].password_secret: "
                                              f"'../../escaped' is not a valid secret name: {RULE}")


def test_the_rarer_address_characters_are_aliases_not_logins(write_site) -> None:
    """o'brien@ and #a+b=c@ are mail addresses, but Dovecot refuses them as login names (tried:
    doveadm auth test exit 77): as aliases they are accepted (tests/live looks them up
    through LDAP with postmap and slapd)."""
    rare = ["o'brien@krasnoyarsk.example.org", "#a+b=c@krasnoyarsk.example.org"]
    accounts = "".join(f"  - {{mail: {json.dumps(m)}, name: Someone}}\n" for m in rare)
    site = write_site(edit(EXAMPLE, OLGA, OLGA + accounts))
    assert errors_of(site) == [
        f"site.yml:54: accounts[2].mail: '{rare[0]}' holds ': " + LOGIN,
        f"site.yml:55: accounts[3].mail: '{rare[1]}' holds # + =: " + LOGIN]
    aliases = OLGA.replace("[buh@", "[" + "".join(f"{json.dumps(m)}, " for m in rare) + "buh@")
    assert errors_of(write_site(edit(EXAMPLE, OLGA, aliases))) == []


def test_secrets_refuses_a_host_key_that_is_a_path_at_its_line(capsys, write_site,
                                                               tmp_path) -> None:
    site = write_site(edit(EXAMPLE, "  mail:\n", '  "../evil":\n'))
    code = main(["secrets", str(site), "--secrets", str(tmp_path / "fresh")])
    _, err = capsys.readouterr()
    assert (code, err) == (2, f"{site}:8: hosts.../evil: host name '../evil' must be lowercase "
                              "letters, digits, -\n")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize("name", ["provider/shop", "ldap/postfix"])
def test_a_secret_with_spaces_around_it_is_refused_where_a_daemon_would_strip_them(
        write_site, name: str) -> None:
    site = write_site(EXAMPLE)
    (site.parent / "secrets" / name).write_text(" a password with spaces around \n")
    path = "relays.provider.auth.password_secret" if name == "provider/shop" else "ldap"
    line = line_of(EXAMPLE, "auth: {user:" if name == "provider/shop" else "ldap:")
    assert errors_of(site) == [
        f"site.yml:{line}: {path}: secret '{name}' starts or ends with a space, which Postfix "
        "strips from the files it goes into"]
    (site.parent / "secrets" / name).write_text("a password with spaces # inside\n")
    assert errors_of(site) == []


def test_dovecot_files_quote_what_they_would_cut_and_keep_the_rest_as_it_was(write_site) -> None:
    """Dovecot reads '#' anywhere as a comment and unquotes "..." (tried: a dnpass 'a#b' failed
    doveadm auth test); tests/live binds with such a password."""
    site = write_site(EXAMPLE)
    (site.parent / "secrets" / "ldap" / "dovecot").write_text(' a#b "q" \\ \n')
    assert errors_of(site) == []
    assert dovecot.conf_value(' a#b "q" \\ ') == '" a#b \\"q\\" \\\\ "'
    assert dovecot.conf_value("Abc123-xyz") == "Abc123-xyz"


def test_check_refuses_with_one_line_per_value_and_a_nonzero_exit(capsys, write_site) -> None:
    text = edit(EXAMPLE, "folders: [INBOX]", "folders: [INBOX, '']")
    site = write_site(edit(text, OLGA, OLGA + '    send_as: ["#shop@isp.example"]\n'))
    code = main(["check", str(site)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{site}:{line_of(text, OLGA.strip()) + 1}: accounts[1].send_as[0]: "
        + NO_COMMENT.format("own_senders"),
        f"{site}:{line_of(text, 'folders:') + 1}: fetch[1].folders[1]: a folder name cannot be "
        "empty"]
