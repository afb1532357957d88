"""Remote mailboxes: one getmail6 instance per mailbox, as data."""

from __future__ import annotations

from mailstack import core
from mailstack.plan import fetch
from mailstack.site.load import load_site
from tests.unit.test_site_checks import GOOD, errors_of

FETCH = GOOD + """fetch:
  - {account: ivan@krasnoyarsk.example.org, protocol: pop3, host: pop.provider.example,
     user: shop@provider.example, password_secret: provider/shop, ca_secret: provider/ca}
  - {account: olga@krasnoyarsk.example.org, protocol: imap, host: imap.provider.example,
     user: olga@provider.example, password_secret: provider/olga, keep: false,
     folders: [INBOX, Archive], interval: 90s}
"""


def with_secrets(write_site, tmp_path, text: str = FETCH):
    for name, value in (("provider/shop", "pw1\n"), ("provider/olga", "pw2\n"),
                        ("provider/ca", "-----BEGIN CERTIFICATE-----\nx\n")):
        path = tmp_path / "secrets" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(value)
        path.chmod(0o600)
    return write_site(text)


def test_getmail_instances(write_site, tmp_path) -> None:
    path = with_secrets(write_site, tmp_path)
    assert errors_of(path) == []
    site = load_site(path)
    pop, imap = site.fetch
    assert fetch.fetch_id(pop) == "pop3-shop-provider.example-pop.provider.example"
    rc = dict(fetch.getmailrc(imap))
    assert dict(rc["retriever"])["type"] == "SimpleIMAPSSLRetriever"
    assert dict(rc["retriever"])["port"] == "993"
    assert dict(rc["retriever"])["mailboxes"] == '("INBOX", "Archive", )'
    assert dict(rc["retriever"])["ca_certs"] == "/etc/ssl/certs/ca-certificates.crt"
    assert dict(rc["options"])["delete"] == "true" and dict(rc["options"])["read_all"] == "false"
    assert dict(rc["destination"])["arguments"] == \
        '("-i", "-f", "%(sender)", "--", "olga@krasnoyarsk.example.org")'
    assert dict(dict(fetch.getmailrc(pop))["options"])["delete"] == "false"
    assert fetch.interval(imap) == "90s" and fetch.interval(pop) == "5min"
    _, plan = core.plan(path)
    host = plan.hosts["mail"]
    assert "getmail6" in host.packages
    assert "mailstack-fetch@imap-olga-provider.example-imap.provider.example.timer" in host.services
    files = {f.path: f for f in host.files}
    rcfile = files["/etc/mailstack/fetch/pop3-shop-provider.example-pop.provider.example.getmailrc"]
    assert (rcfile.mode, rcfile.owner) == (0o600, "mailstack-fetch")
    secret = files["/etc/mailstack/fetch/pop3-shop-provider.example-pop.provider.example.password"]
    assert (secret.mode, secret.owner, secret.data["text"]) == (0o600, "mailstack-fetch", "pw1")
    assert host.facts["system_users"] == ["mailstack-fetch"]


def test_fetch_mistakes(write_site, tmp_path) -> None:
    text = FETCH.replace("account: olga@", "account: olgaa@").replace(
        "protocol: pop3, host: pop.provider.example,",
        "protocol: pop3, host: pop.provider.example, folders: [Archive],")
    path = with_secrets(write_site, tmp_path, text)
    assert errors_of(path) == [
        "site.yml:14: fetch[0].folders: POP3 has only the INBOX; folders need imap",
        "site.yml:16: fetch[1].account: no account 'olgaa@krasnoyarsk.example.org'; did you mean "
        "'olga@krasnoyarsk.example.org'?",
    ]
    path = with_secrets(write_site, tmp_path, FETCH.replace("interval: 90s", "interval: 5 min"))
    assert errors_of(path) == [
        "site.yml:18: fetch[1].interval: '5 min' does not match ^[1-9][0-9]*[smh]$"]


def test_the_size_limit_follows_postfix_unless_the_site_sets_one(write_site, tmp_path) -> None:
    site = load_site(with_secrets(write_site, tmp_path))
    pop, imap = site.fetch
    assert fetch.size_limit(site, pop) == 52428800 - fetch.SIZE_MARGIN == 52412416
    options = dict(dict(fetch.getmailrc(pop, fetch.size_limit(site, pop)))["options"])
    assert options["max_message_size"] == "52412416"
    assert "to_oldmail_on_each_mail" not in options  # getmail6 6.18.11 re-delivers with it
    assert (options["message_log"], options["message_log_verbose"],
            options["message_log_syslog"]) == (
        "/var/lib/mailstack-fetch/pop3-shop-provider.example-pop.provider.example/message.log",
        "true", "false")
    text = FETCH.replace("interval: 90s", "interval: 90s, max_message_size: 1000000")
    site = load_site(with_secrets(write_site, tmp_path,
                                  text + 'postfix: {main: {message_size_limit: "2000000"}}\n'))
    pop, imap = site.fetch
    assert (fetch.size_limit(site, pop), fetch.size_limit(site, imap)) == (
        2000000 - fetch.SIZE_MARGIN, 1000000)
    site = load_site(with_secrets(write_site, tmp_path,
                                  FETCH + 'postfix: {main: {message_size_limit: "0"}}\n'))
    assert fetch.size_limit(site, site.fetch[0]) == 0  # Postfix without a limit: none here
    assert "max_message_size" not in dict(dict(fetch.getmailrc(site.fetch[0], 0))["options"])


def test_a_size_limit_above_postfix_is_refused(write_site, tmp_path) -> None:
    text = FETCH.replace("interval: 90s", "interval: 90s, max_message_size: 3000000")
    path = with_secrets(write_site, tmp_path,
                        text + 'postfix: {main: {message_size_limit: "2000000"}}\n')
    assert errors_of(path) == [
        "site.yml:18: fetch[1].max_message_size: 3000000 is above Postfix's message_size_limit "
        "(2000000): a message between the two would be downloaded and refused on every run"]
    path = with_secrets(write_site, tmp_path, FETCH.replace(
        "interval: 90s", "interval: 90s, max_message_size: 0"))
    assert errors_of(path) == [
        "site.yml:18: fetch[1].max_message_size: 0 is not a size in bytes (at least 1)"]
    path = with_secrets(write_site, tmp_path, text + "postfix: {main: {message_size_limit: "
                                                     "50M}}\n")
    assert errors_of(path) == [
        "site.yml:19: postfix.main.message_size_limit: '50M' is not a number of bytes"]


def test_units_time_out_report_failures_and_run_through_fetch_run(write_site, tmp_path) -> None:
    import json

    from mailstack import render

    _, plan = core.plan(with_secrets(write_site, tmp_path))
    host = plan.hosts["mail"]
    files = {f.path: f for f in host.files}
    out = {r.spec.path: r.content.decode() for r in render.render_plan(plan)["mail"]}
    service = out["/etc/systemd/system/mailstack-fetch@.service"]
    assert "\nTimeoutStartSec=30min\n" in service
    assert "\nOnFailure=mailstack-fetch-failed@%i.service\n" in service
    assert ("\nExecStart=/usr/bin/python3 /usr/local/lib/mailstack/fetch-run "
            "/etc/mailstack/fetch/%i.json\n") in service
    failed = out["/etc/systemd/system/mailstack-fetch-failed@.service"]
    assert ("\nExecStart=/usr/bin/python3 /usr/local/lib/mailstack/fetch-run --failed "
            "/etc/mailstack/fetch/%i.json\n") in failed
    assert "\nUser=mailstack-fetch\n" in failed
    runner = files["/usr/local/lib/mailstack/fetch-run"]
    assert (runner.mode, runner.owner, runner.pickup) == (0o755, "root", "none")
    assert out["/usr/local/lib/mailstack/fetch-run"].startswith("#!/usr/bin/python3\n")
    cfg = json.loads(out["/etc/mailstack/fetch/imap-olga-provider.example-imap.provider.example"
                         ".json"])
    assert cfg == {
        "account": "olga@krasnoyarsk.example.org",
        "getmail": "/usr/bin/getmail",
        "host": "imap.provider.example",
        "label": "imap olga@provider.example at imap.provider.example -> "
                 "olga@krasnoyarsk.example.org",
        "limit": 52412416,
        "message_log": "/var/lib/mailstack-fetch/imap-olga-provider.example-imap.provider"
                       ".example/message.log",
        "notice_from": "postmaster@krasnoyarsk.example.org",
        "protocol": "imap",
        "rcfile": "/etc/mailstack/fetch/imap-olga-provider.example-imap.provider.example"
                  ".getmailrc",
        "state_dir": "/var/lib/mailstack-fetch/imap-olga-provider.example-imap.provider.example",
        "unit": "mailstack-fetch@imap-olga-provider.example-imap.provider.example.service",
        "user": "olga@provider.example",
    }
    assert files["/etc/systemd/system/mailstack-fetch-failed@.service"].pickup == "systemd"
