"""mailstack.init without prompts: answers -> site data -> a site file `check` accepts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from mailstack import core, init
from mailstack.errors import InputError
from mailstack.site.load import load_site

DOMAIN = "krasnoyarsk.example.org"


def relay_answers(tmp_path: Path) -> init.Answers:
    (tmp_path / "relay-pw").write_text("s3cret relay\n")
    (tmp_path / "pop-pw").write_text("pop-secret\n")
    return init.from_flags(
        hostname="Mail.Krasnoyarsk.Example.org", domains=[DOMAIN, "shop.example.org"],
        relay_mode="relay", relay_host="192.0.2.1", relay_tls_name="relay.head-office.example",
        relay_user="shop@provider.example", relay_password_file=str(tmp_path / "relay-pw"),
        accounts=[f"ivan@{DOMAIN}:Ivan \"Vanya\" Petrov", f"olga@{DOMAIN}:Ольга Сидорова"],
        postmaster=f"olga@{DOMAIN}",
        fetch=[f"ivan@{DOMAIN}:pop3:pop.provider.example:shop@provider.example:"
               f"{tmp_path / 'pop-pw'}"])


def test_flags_to_site_data(tmp_path) -> None:
    data = init.site_data(relay_answers(tmp_path))
    assert data == {
        "site": "krasnoyarsk",
        "domains": [DOMAIN, "shop.example.org"],
        "hosts": {"mail": {"hostname": f"mail.{DOMAIN}", "roles": ["ldap", "mta", "imap"]}},
        "ldap": {"base": "dc=krasnoyarsk,dc=example,dc=org"},
        "relay": {"default": "smarthost"},
        "relays": {"smarthost": {
            "host": "192.0.2.1", "port": 587, "tls": "verify",
            "tls_name": "relay.head-office.example",
            "auth": {"user": "shop@provider.example", "password_secret": "relays/smarthost"}}},
        "accounts": [
            {"mail": f"ivan@{DOMAIN}", "name": "Ivan \"Vanya\" Petrov"},
            {"mail": f"olga@{DOMAIN}", "name": "Ольга Сидорова",
             "aliases": [f"postmaster@{DOMAIN}", f"abuse@{DOMAIN}",
                         "postmaster@shop.example.org", "abuse@shop.example.org"]}],
        "fetch": [{"account": f"ivan@{DOMAIN}", "protocol": "pop3",
                   "host": "pop.provider.example", "user": "shop@provider.example",
                   "password_secret": "fetch/pop.provider.example/shop@provider.example",
                   "keep": True}],
        "clients": {"serve": True},
        "quota": {"warning": 90, "when_full": "defer"},
        "bans": {"max_failures": 10, "window": "10m", "ban_time": "1h", "never": []},
    }
    assert init.typed_secrets(relay_answers(tmp_path)) == {
        "relays/smarthost": "s3cret relay",
        "fetch/pop.provider.example/shop@provider.example": "pop-secret"}


def test_site_text_is_the_data_with_a_comment_per_section(tmp_path) -> None:
    answers = relay_answers(tmp_path)
    text = init.site_text(answers)
    assert yaml.safe_load(text) == init.site_data(answers)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", " ")):
            assert lines[i - 1].startswith("# "), line  # every top-level key is explained
    assert "s3cret" not in text and "pop-secret" not in text


def test_create_writes_a_site_check_accepts(tmp_path) -> None:
    rep = init.create(tmp_path / "new", relay_answers(tmp_path))
    site_file = tmp_path / "new" / "site.yml"
    assert rep.site_file == site_file
    assert load_site(site_file).relays["smarthost"].auth is not None
    report = core.check(site_file)
    assert (report.ok, report.findings) == (True, [])
    secrets_dir = tmp_path / "new" / "secrets"
    assert (secrets_dir / "relays/smarthost").read_text() == "s3cret relay\n"
    assert rep.typed == [secrets_dir / "relays/smarthost",
                         secrets_dir / "fetch/pop.provider.example/shop@provider.example"]
    assert sorted(rep.secrets_created) == sorted([
        "ldap/dovecot", "ldap/postfix", f"accounts/ivan@{DOMAIN}", f"accounts/olga@{DOMAIN}",
        "tls/ca.key", "tls/ca.crt", "tls/mail.key", "tls/mail.crt"])
    modes = {stat.S_IMODE(p.stat().st_mode) for p in secrets_dir.rglob("*") if p.is_file()}
    assert modes == {0o600}
    inventory = yaml.safe_load((tmp_path / "new" / "inventory.yml").read_text())
    assert inventory == {"all": {"hosts": {"mail": {
        "ansible_host": f"mail.{DOMAIN}", "ansible_user": "root",
        "ansible_python_interpreter": "/usr/bin/python3"}}}}
    assert rep.next_commands() == [
        f"mailstack check {site_file}", f"mailstack render {site_file} -o build",
        f"mailstack apply {site_file} -i {tmp_path / 'new' / 'inventory.yml'}"]


def test_direct_site_with_defaults(tmp_path) -> None:
    answers = init.from_flags(
        hostname="mx1.example.org", domains=["example.org"],
        accounts=["postmaster@example.org:Post Master", "ivan.petrov@example.org:Ivan Petrov"])
    data = init.site_data(answers)
    assert data["relay"] == {"default": "direct"} and "relays" not in data
    # postmaster@ is an account: only abuse@ becomes an alias, of the first account
    assert data["accounts"][0] == {"mail": "postmaster@example.org", "name": "Post Master",
                                   "aliases": ["abuse@example.org"]}
    assert data["hosts"] == {"mx1": {"hostname": "mx1.example.org",
                                     "roles": ["ldap", "mta", "imap"]}}
    init.create(tmp_path, answers)
    assert core.check(tmp_path / "site.yml").findings == []


@pytest.mark.parametrize(("call", "message"), [
    (lambda: init.parse_hostname("mail_server"),
     "'mail_server' is not a full host name: use a-z, digits, dots and hyphens (mail.example.org)"),
    (lambda: init.parse_hostname("mail"),
     "'mail' is not a full host name: use a-z, digits, dots and hyphens (mail.example.org)"),
    (lambda: init.from_flags(hostname="mail_server"),
     "init: --hostname: 'mail_server' is not a full host name: use a-z, digits, dots and "
     "hyphens (mail.example.org)"),
    (lambda: init.parse_domains("example.org mail.example.org", "mail.example.org"),
     "'mail.example.org' is the server's host name; the mail domain is usually the part after "
     "its first dot"),
    (lambda: init.parse_domains("example.org, example.org", None), "'example.org' is given twice"),
    (lambda: init.parse_address("ivan@other.org", ["example.org"]),
     "'ivan@other.org' is not in the site's domains (example.org)"),
    (lambda: init.parse_address("i+v@example.org", ["example.org"]),
     "'i+v@example.org': an account's address is its login name: use letters, digits, '.', '-' "
     "and '_' before the @"),
    (lambda: init.parse_address("ivan@example.org", ["example.org"], ["ivan@example.org"]),
     "'ivan@example.org' is already an account"),
    (lambda: init.parse_server("mail.example.org", ["mail.example.org", "example.org"]),
     "'mail.example.org' is this site itself: mail sent there would loop"),
    (lambda: init.parse_port("70000"), "'70000' is not a TCP port (1 to 65535)"),
    (lambda: init.parse_login("a:b"),
     "the login name cannot hold ':' (Postfix's password map splits there)"),
    (lambda: init.parse_password(" pw"),
     "the password cannot start or end with a space or hold a line break (it goes into "
     "Postfix's and getmail's files)"),
    (lambda: init.from_flags(hostname="mail.example.org", domains=["example.org"],
                             accounts=["ivan@example.org"]),
     "init: --account: 'ivan@example.org': give ADDRESS:NAME (ivan@example.org:\"Ivan Petrov\")"),
    (lambda: init.from_flags(relay_mode="direct", relay_host="relay.example.net"),
     "init: --relay-mode direct takes no --relay-host"),
    (lambda: init.from_flags(hostname="mail.example.org", domains=["example.org"],
                             accounts=["ivan@example.org:Ivan"], postmaster="olga@example.org"),
     "init: --postmaster: 'olga@example.org' is not one of the accounts (ivan@example.org)"),
    (lambda: init.from_flags(hostname="mail.example.org", domains=["example.org"],
                             accounts=["ivan@example.org:Ivan"],
                             fetch=["ivan@example.org:smtp:pop.example.net:ivan"]),
     "init: --fetch: 'smtp' is not pop3 or imap"),
])
def test_refusals_exact_text(call, message) -> None:
    with pytest.raises(InputError) as err:
        call()
    assert str(err.value) == message


def test_missing_answers_and_defaults() -> None:
    assert init.missing(init.Answers()) == ["--hostname", "--domain", "--account"]
    base = init.from_flags(hostname="mail.example.org", domains=["example.org"],
                           accounts=["ivan@example.org:Ivan"])
    assert init.missing(base) == []
    ip_relay = init.from_flags(hostname="mail.example.org", domains=["example.org"],
                               accounts=["ivan@example.org:Ivan"], relay_host="192.0.2.1")
    assert init.missing(ip_relay) == ["--relay-tls-name"]  # a checked certificate needs a name
    wrapper = init.with_defaults(init.from_flags(
        hostname="mail.example.org", domains=["example.org"], accounts=["ivan@example.org:Ivan"],
        relay_host="smtp.example.net", relay_tls="wrapper"))
    assert (wrapper.relay_mode, wrapper.relay_port, wrapper.site) == ("relay", 465, "example")
    assert init.default_domain("mail.krasnoyarsk.example.org") == "krasnoyarsk.example.org"
    assert init.default_domain("example.org") == "example.org"
    assert init.default_name("ivan.petrov@example.org") == "Ivan Petrov"


def test_create_never_overwrites(tmp_path) -> None:
    answers = init.from_flags(hostname="mail.example.org", domains=["example.org"],
                              accounts=["ivan@example.org:Ivan"])
    (tmp_path / "site.yml").write_text("mine\n")
    with pytest.raises(InputError) as err:
        init.create(tmp_path, answers)
    assert str(err.value) == (f"{tmp_path}/site.yml: exists already; init never overwrites a "
                              "site (nothing was written)")
    assert (tmp_path / "site.yml").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.yml"]


def test_create_refuses_an_existing_typed_secret(tmp_path) -> None:
    answers = relay_answers(tmp_path)
    existing = tmp_path / "new" / "secrets" / "relays" / "smarthost"
    existing.parent.mkdir(parents=True)
    existing.write_text("older\n")
    with pytest.raises(InputError) as err:
        init.create(tmp_path / "new", answers)
    assert str(err.value) == (f"{existing}: exists already; remove it or answer differently "
                              "(nothing was written)")
    assert not (tmp_path / "new" / "site.yml").exists()
    assert existing.read_text() == "older\n"


def test_user_add_edits_what_init_wrote(tmp_path) -> None:
    """`mailstack user add` edits site.yml by lines: init's layout must allow it."""
    from mailstack.site import edit

    text = init.site_text(relay_answers(tmp_path))
    added = edit.add_account(text, {"mail": f"nina@{DOMAIN}", "name": "Nina"})
    assert added.count("\n# ") == text.count("\n# ")  # every comment kept
    assert yaml.safe_load(added)["accounts"][-1] == {"mail": f"nina@{DOMAIN}", "name": "Nina"}


def test_complete_asks_nothing_when_the_flags_answer_everything(monkeypatch) -> None:
    import questionary

    from mailstack import init_prompts

    def no_question(*_a: object, **_k: object) -> None:
        raise AssertionError("a question was asked")

    for kind in ("text", "password", "select", "confirm"):
        monkeypatch.setattr(questionary, kind, no_question)
    answers = init.from_flags(hostname="mail.example.org", domains=["example.org"],
                              accounts=["ivan@example.org:Ivan"])
    done = init_prompts.complete(answers, interactive=True)
    assert (done.relay_mode, done.site, done.postmaster, done.fetch) == (
        "direct", "example", "ivan@example.org", ())
