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
