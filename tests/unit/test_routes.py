"""Relays and routes: Postfix's precedence as data, and the mistakes check refuses."""

from __future__ import annotations

import pytest

from mailstack.plan import postfix, relays
from mailstack.site.load import load_site
from tests.unit.test_site_checks import GOOD, errors_of

TWO = GOOD.replace(
    "relays:\n  head-office: {host: 192.0.2.1, tls: encrypt}\n",
    "relays:\n"
    "  head-office: {host: 192.0.2.1, tls: verify, tls_name: relay.head-office.example}\n"
    "  provider:\n"
    "    host: smtp.provider.example\n"
    "    port: 465\n"
    "    tls: wrapper\n"
    "    ca_secret: provider-ca\n"
    "    auth: {user: shop@provider.example, password_secret: provider-shop}\n"
    "routes:\n"
    "  recipients: {'@partner.example.net': head-office, boss@provider.example: direct}\n"
    "  senders: {shop@provider.example: provider}\n",
).replace("name: Olga Sidorova}", "name: Olga Sidorova, send_as: [shop@provider.example]}")


@pytest.fixture
def two(write_site, tmp_path):
    (tmp_path / "secrets/provider-ca").write_text("-----BEGIN CERTIFICATE-----\nx\n")
    (tmp_path / "secrets/provider-shop").write_text("s3cret\n")
    for name in ("provider-ca", "provider-shop"):
        (tmp_path / "secrets" / name).chmod(0o600)
    return write_site(TWO)


def test_two_relays_are_clean(two) -> None:
    assert errors_of(two) == []


@pytest.mark.parametrize(("sender", "rcpt", "expected"), [
    ("olga@krasnoyarsk.example.org", "ivan@krasnoyarsk.example.org",
     "local delivery to Dovecot over LMTP (krasnoyarsk.example.org is a local domain)"),
    ("shop@provider.example", "a@partner.example.net",
     "relay 'head-office' via relay-head-office:[192.0.2.1]:25 (recipient route "
     "partner.example.net); no credentials"),
    ("shop@provider.example", "x@elsewhere.example.com",
     "relay 'provider' via relay-provider:[smtp.provider.example]:465 (sender route "
     "shop@provider.example); credentials of shop@provider.example"),
    ("shop+tag@provider.example", "x@elsewhere.example.com",
     "relay 'provider' via relay-provider:[smtp.provider.example]:465 (sender route "
     "shop@provider.example); credentials of shop@provider.example"),
    ("ivan@krasnoyarsk.example.org", "x@elsewhere.example.com",
     "relay 'head-office' via relay-head-office:[192.0.2.1]:25 (the default); no credentials"),
    ("shop@provider.example", "boss@provider.example",
     "direct delivery (MX lookup) via smtp: (recipient route boss@provider.example); "
     "no credentials"),
])
def test_decide_follows_postfix_precedence(two, sender: str, rcpt: str, expected: str) -> None:
    assert relays.decide(load_site(two), sender, rcpt).describe() == expected


def test_tables_and_transports_are_what_gets_rendered(two) -> None:
    site = load_site(two)
    t = relays.tables(site)
    assert t.recipients == (("boss@provider.example", "smtp:"),
                            ("partner.example.net", "relay-head-office:[192.0.2.1]:25"))
    assert t.senders == (("shop@provider.example", "relay-provider:[smtp.provider.example]:465"),)
    main = postfix.main_cf(site, "mail")
    assert main["transport_maps"] == "texthash:/etc/postfix/transport"
    assert main["sender_dependent_default_transport_maps"] == \
        "texthash:/etc/postfix/sender_transport"
    assert main["smtp_sasl_auth_enable"] == "no"
    services = {s.name: dict(s.options) for s in postfix.master_cf(site)}
    ho, pr = services["relay-head-office"], services["relay-provider"]
    assert ho["smtp_sasl_auth_enable"] == "no" and "smtp_sasl_password_maps" not in ho
    assert ho["smtp_tls_security_level"] == "secure"
    assert ho["smtp_tls_secure_cert_match"] == "relay.head-office.example"
    assert pr["smtp_sasl_password_maps"] == "texthash:/etc/postfix/relay/provider.sasl"
    assert pr["smtp_tls_wrappermode"] == "yes"
    assert pr["smtp_tls_CAfile"] == "/etc/postfix/relay/provider-ca.crt"


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("senders: {shop@provider.example: provider}", "senders: {shop@provider.example: provder}",
     ["site.yml:17: routes.senders.shop@provider.example: no relay named 'provder' under "
      "relays:; did you mean 'provider'?"]),
    ("senders: {shop@provider.example: provider}",
     "senders: {shop@provider.example: {relay: provider, to: '@partner.example.net'}}",
     ["site.yml:17: routes.senders.shop@provider.example: a rule on sender and recipient "
      "together cannot be expressed in Postfix's maps (transport_maps looks at the recipient "
      "only, sender_dependent_default_transport_maps at the sender only): write a recipient "
      "route or a sender route"]),
    ("senders: {shop@provider.example: provider}", "senders: {info@provider.example: provider}",
     ["site.yml:17: routes.senders.info@provider.example: no account may send as "
      "'info@provider.example': add it to an account's send_as, or Postfix refuses the sender "
      "before routing"]),
    ("boss@provider.example: direct}", "olga@krasnoyarsk.example.org: direct}",
     ["site.yml:16: routes.recipients.olga@krasnoyarsk.example.org: 'olga@krasnoyarsk.example.org'"
      " is in the site's own domain krasnoyarsk.example.org: its mail is delivered here, a "
      "recipient route cannot send it away"]),
    ("boss@provider.example: direct}", "boss@partner.example.net: head-office}",
     ["site.yml:16: routes.recipients.boss@partner.example.net: warning: this route never "
      "changes anything: '@partner.example.net' already sends it to 'head-office'"]),
    ("send_as: [shop@provider.example]", "send_as: [shop@provider.example, "
     "info@krasnoyarsk.example.org]",
     ["site.yml:21: accounts[1].send_as[1]: 'info@krasnoyarsk.example.org' is a local address: "
      "make it an alias of this account instead (send_as is for outside addresses)"]),
])
def test_route_mistakes(two, old: str, new: str, expected: list[str]) -> None:
    assert old in TWO
    two.write_text(TWO.replace(old, new, 1))
    assert errors_of(two) == expected


def test_verifys_route_cases_take_the_relay_the_site_file_names(example) -> None:
    """The example's own words (inventories/branch-office/site.yml), as a table here: the
    default goes to head-office, @head-office.example to head-office, and mail sent as
    shop@provider.example to the provider."""
    from mailstack.verify.hops import route_cases

    cases = {c.what: (c.sender, c.rcpt, c.relay) for c in route_cases(load_site(example))}
    assert cases == {
        "the default": ("ivan@krasnoyarsk.example.org", "verify@relay-check.example.net",
                        "head-office"),
        "recipient route @head-office.example": ("shop@provider.example",
                                                 "verify@head-office.example", "head-office"),
        "sender route shop@provider.example": ("shop@provider.example",
                                               "verify@relay-check.example.net", "provider"),
    }


def test_each_relay_gets_sni_and_the_queue_warns_senders(two) -> None:
    site = load_site(two)
    opts = {name: dict(relays.transport_options(name, relay))
            for name, relay in site.relays.items()}
    for name, relay in site.relays.items():
        if relay.tls_name:
            assert opts[name]["smtp_tls_servername"] == relay.tls_name
        elif any(c.isalpha() for c in relay.host.split(".")[-1]):
            assert opts[name]["smtp_tls_servername"] == "hostname"  # the nexthop's name
        else:
            assert "smtp_tls_servername" not in opts[name]  # an IP: no name to send
    assert postfix.main_cf(site, next(iter(site.hosts)))["delay_warning_time"] == "4h"
