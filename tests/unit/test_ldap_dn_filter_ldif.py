"""RFC 4514 DNs, RFC 4515 filters and RFC 2849 LDIF: the one module each that builds them."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.ldap import filter as lf
from mailstack.ldap.dn import DN, DNError, dn, escape_value
from mailstack.ldap.ldif import Entry, dumps, line


@pytest.mark.parametrize(("value", "escaped"), [
    ("Petrov, Ivan", r"Petrov\, Ivan"),
    ("a+b", r"a\+b"),
    ('say "hi"', r'say \"hi\"'),
    ("#1", r"\#1"),
    (" lead", r"\ lead"),
    ("trail ", r"trail\ "),
    ("semi;colon<>", r"semi\;colon\<\>"),
    ("back\\slash", r"back\\slash"),
    ("nul\x00", r"nul\00"),
    ("ivan@krasnoyarsk.example.org", "ivan@krasnoyarsk.example.org"),
])
def test_dn_value_escaping(value: str, escaped: str) -> None:
    assert escape_value(value) == escaped


def test_dn_parse_and_build() -> None:
    d = dn(r"cn=Petrov\, Ivan+uid=ivan , ou=people,DC=example,dc=org")
    assert d.rdns[0] == (("cn", "Petrov, Ivan"), ("uid", "ivan"))
    assert str(d) == r"cn=Petrov\, Ivan+uid=ivan,ou=people,DC=example,dc=org"
    base = dn("dc=example,dc=org")
    assert d.is_within(base) and d.is_below(base) and not base.is_below(base)
    assert base.is_within(base)
    assert str(base.child("mail", "a,b@example.org")) == r"mail=a\,b@example.org,dc=example,dc=org"
    assert dn("CN=Admin,DC=Example,DC=Org") == dn("cn=admin,dc=example,dc=org")
    assert dn(r"cn=\41B,dc=x").rdns[0][0][1] == "AB"


@pytest.mark.parametrize(("text", "message"), [
    ("foo", "'foo' has no '=' (expected type=value)"),
    ("cn=a,", "the DN ends with a separator"),
    ("cn=a;b", "';' must be escaped in a DN value"),
    ("=x", "'' is not an attribute type"),
    (r"cn=\zz", r"invalid escape '\z'"),
    ("cn=", "an attribute value is empty"),
    ("cn=a\nb", "a DN cannot contain a line break"),
    ("1cn=a", "'1cn' is not an attribute type"),
])
def test_dn_invalid(text: str, message: str) -> None:
    with pytest.raises(DNError) as err:
        dn(text)
    assert str(err.value) == message


@given(st.text(min_size=1, alphabet=st.characters(blacklist_categories=("Cs",),
                                                  blacklist_characters="\n\r")))
def test_dn_round_trip(value: str) -> None:
    built = DN(((("cn", value),),)).child("mail", value)
    assert dn(str(built)).rdns == built.rdns


@pytest.mark.parametrize(("value", "escaped"), [
    ("a*b", r"a\2ab"), ("(x)", r"\28x\29"), ("back\\", r"back\5c"), ("nul\x00", r"nul\00"),
    ("ivan@example.org", "ivan@example.org"),
])
def test_filter_escaping(value: str, escaped: str) -> None:
    assert lf.escape(value) == escaped


def test_filter_render_placeholders_and_percent() -> None:
    f = lf.and_(lf.Eq("objectClass", "CourierMailAccount"), lf.Eq("mail", lf.Placeholder("%u")))
    assert lf.render(f) == "(&(objectClass=CourierMailAccount)(mail=%u))"
    # a literal % must reach Postfix/Dovecot as %%, but stays single in a plain LDAP filter
    g = lf.Eq("description", "100% (*)")
    assert lf.render(g) == r"(description=100%% \28\2a\29)"
    assert lf.render(g, percent=False) == r"(description=100% \28\2a\29)"
    assert lf.attributes(f) == {"objectClass", "mail"}


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_filter_escape_round_trip(value: str) -> None:
    parsed = lf.parse(lf.render(lf.Eq("cn", value), percent=False))
    assert parsed == lf.Eq("cn", value)


def test_filter_parse_and_match() -> None:
    f = lf.parse("(&(objectClass=CourierMailAccount)(|(mail=a@x)(mail=b@x))(!(disableimap=*)))")
    assert lf.matches(f, {"objectClass": ["courierMailAccount"], "mail": ["B@x"]})
    assert not lf.matches(f, {"objectClass": ["CourierMailAccount"], "mail": ["b@x"],
                              "disableimap": ["1"]})
    with pytest.raises(ValueError, match="substring"):
        lf.parse("(mail=*@x)")


def test_ldif_safe_and_base64_values() -> None:
    assert line("cn", "Ivan Petrov") == "cn: Ivan Petrov"
    assert line("cn", "Иван") == "cn:: " + base64.b64encode("Иван".encode()).decode()
    assert line("description", ":colon first").startswith("description:: ")
    assert line("description", "trailing ").startswith("description:: ")
    text = dumps([Entry(dn("dc=x"), (("objectClass", "dcObject"), ("dc", "x"))),
                  Entry(dn("ou=p,dc=x"), (("ou", "p"),))], header=["hello"])
    assert text == "# hello\n\ndn: dc=x\nobjectClass: dcObject\ndc: x\n\ndn: ou=p,dc=x\nou: p\n"
