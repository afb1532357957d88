"""`check --with-daemons`: the daemons' own checkers pass the example and catch broken renders."""

from __future__ import annotations

from mailstack import core, daemons, render, secrets
from mailstack.plan import plan_site
from mailstack.site.load import load_site
from tests.conftest import live

BASE = "dc=krasnoyarsk,dc=example,dc=org"
HIDE_PEOPLE_FROM_POSTFIX = (
    f'ldap:\n  base: {BASE}\n  acl:\n    - to dn.subtree="ou=people,{BASE}" '
    f'by dn.exact="cn=postfix,ou=applications,{BASE}" none by * break\n')

pytestmark = live()


LOCKED = ("  - mail: gone@krasnoyarsk.example.org\n    name: Former Colleague\n"
          "    enabled: false\n    aliases: [old-shop@krasnoyarsk.example.org]\n")


def test_the_example_passes_every_checker(example) -> None:
    """The example with a locked account (and its alias, which reaches no one else), so that
    the locked-address tables are asked for a key they find and one they do not."""
    text = example.read_text()
    example.write_text(text.replace("\naliases:\n", "\n" + LOCKED + "\naliases:\n", 1))
    secret = example.parent / "secrets" / "accounts" / "gone@krasnoyarsk.example.org"
    secret.write_text("former-colleague-password\n")
    secret.chmod(0o600)
    report = core.check(example, with_daemons=True)
    assert report.findings == []
    failed = [str(v) for v in report.daemon_verdicts if not v.ok]
    assert failed == []
    names = {v.name.split(":")[0] for v in report.daemon_verdicts}
    assert {"slapadd -n0", "slapadd -n1", "slaptest", "postfix check (no warnings)",
            "postconf -n (no warnings)", "doveconf -n (no warnings)", "slapacl",
            "sievec"} <= names
    # seven LDAP tables: a key of the site found, a key nobody has, an outside address that
    # asks no LDAP server (the table's domain =) and the control that does; the locked-address
    # tables and the aliases are also asked for a key they must not find (an unlocked one)
    # and the lists' gate (pipemap:, plan/postfix.alias_maps): a list's members through it, an
    # account's address answered without LDAP, a list address asking LDAP (the control)
    postmaps = {v.name: v for v in report.daemon_verdicts if v.name.startswith("postmap -q")}
    gate = [name for name in postmaps if "pipemap:" in name]
    assert gate == [
        "postmap -q team@krasnoyarsk.example.org pipemap:{list_addresses, virtual_alias_groups}:"
        " its members",
        "postmap -q ivan@krasnoyarsk.example.org pipemap:{list_addresses, virtual_alias_groups}"
        " asks no LDAP server",
        "postmap -q team@krasnoyarsk.example.org pipemap:{list_addresses, virtual_alias_groups}"
        " asks LDAP (control)"]
    assert len(postmaps) == 7 * 4 + 3 + len(gate)
    assert sum(name.endswith("asks no LDAP server") for name in postmaps) == 7 + 1
    for table, found, unlocked in (("locked_accounts", "gone@", "ivan@"),
                                   ("locked_aliases", "old-shop@", "info@"),
                                   ("virtual_alias_maps", "info@", "old-shop@")):
        asked = f"postmap -q %skrasnoyarsk.example.org ldap:/etc/postfix/ldap/{table}.cf"
        assert asked % found in postmaps
        assert asked % unlocked + " finds nothing" in postmaps
    assert report.ok


def test_broken_renders_fail_the_matching_checkers(example) -> None:
    """A typo only Postfix knows, an ACL that hides Postfix's lookups, a wrong mailbox home.

    ``check`` finds the ACL mistake by itself; the daemons must find it too (no stand-in).
    """
    text = example.read_text()
    text = text.replace(f"ldap:\n  base: {BASE}\n", HIDE_PEOPLE_FROM_POSTFIX)
    text += "postfix:\n  main: {smtpd_tls_securty_level: may}\n"
    example.write_text(text)
    site = load_site(example)
    decides = f"('by dn.exact=cn=postfix,ou=applications,{BASE} none' of this rule decides)"
    searches = [f"cn=postfix,ou=applications,{BASE} cannot do what postfix's lookup {name} "
                f"needs: search on entry of ou=people,{BASE} {decides}"
                for name in ("locked_accounts", "sender_login_accounts", "virtual_mailbox_maps")]
    # the lists' expansion reads the member entries it follows (plan/dit.py's follows)
    follows = (f"cn=postfix,ou=applications,{BASE} cannot do what postfix's lookup "
               "virtual_alias_groups (followed) needs: read on entry of "
               f"mail=ivan@krasnoyarsk.example.org,ou=people,{BASE} {decides}")
    assert [f.message for f in core.check(example).findings if f.severity == "error"] == [
        *searches[:2], follows, searches[2]]
    store = secrets.SecretStore(example.parent / "secrets")
    values = {r.name: store.read(r.name) for r in secrets.required(site)}
    plan = plan_site(site, values)
    rendered = render.render_plan(plan)
    for f in rendered["mail"]:
        if f.spec.path.endswith("dovecot-ldap-userdb.conf.ext"):
            content = f.content.replace(b"user_attrs = homeDirectory=home",
                                        b"user_attrs = =home=/var/mail/%u")
            rendered["mail"][rendered["mail"].index(f)] = render.RenderedFile(f.spec, content)
    verdicts = {v.name: v for v in daemons.check_plan(site, plan, rendered, values)}
    failed = sorted(name for name, v in verdicts.items() if not v.ok)
    assert "postconf -n (no warnings)" in failed
    assert "unused parameter: smtpd_tls_securty_level=may" in verdicts[
        "postconf -n (no warnings)"].detail
    assert any(n.startswith("slapacl") for n in failed)
    assert "postmap -q ivan@krasnoyarsk.example.org " \
           "ldap:/etc/postfix/ldap/virtual_mailbox_maps.cf" in failed
    home = "doveadm user ivan@krasnoyarsk.example.org: home " \
           "/var/vmail/krasnoyarsk.example.org/ivan"
    assert home in failed and "/var/mail/ivan@krasnoyarsk.example.org" in verdicts[home].detail
    # what the broken parts do not touch still passes
    for name in ("slapadd -n0: cn=config into an empty slapd.d", "slaptest",
                 "doveadm auth test ivan@krasnoyarsk.example.org (right password)"):
        assert verdicts[name].ok, verdicts[name]


def test_the_head_office_example_passes_every_checker(tmp_path) -> None:
    """A head office and two branches: each host's files pass the daemons' checkers, a
    replica's slapd starts from its configuration alone (no tree), and the relay's transport
    table answers each account's home as its next hop."""
    import shutil

    from mailstack import secrets
    from mailstack.site.load import load_site
    from tests.conftest import FIXED_SECRETS, ROOT

    site = tmp_path / "site.yml"
    shutil.copy(ROOT / "inventories" / "head-office" / "site.yml", site)
    (tmp_path / "secrets" / "lab").mkdir(parents=True)
    shutil.copy(FIXED_SECRETS / "lab" / "head-office-ca", tmp_path / "secrets" / "lab" / "isp-ca")
    (tmp_path / "secrets" / "lab" / "isp-ca").chmod(0o600)
    secrets.generate(load_site(site), tmp_path / "secrets")
    report = core.check(site, with_daemons=True)
    assert [str(v) for v in report.daemon_verdicts if not v.ok] == []
    by_host: dict[str, set[str]] = {}
    for v in report.daemon_verdicts:
        by_host.setdefault(v.host, set()).add(v.name)
    assert by_host.keys() == {"hq", "tomsk", "omsk"}
    for branch in ("tomsk", "omsk"):
        assert {"slapadd -n1: an empty database (replica)", "slaptest",
                "slapd starts with the rendered configuration (replica)",
                "postfix check (no warnings)", "doveconf -n (no warnings)"} <= by_host[branch]
    assert "postmap -q ivan@taiga.example.org ldap:/etc/postfix/ldap/remote_mailboxes.cf" \
        in by_host["hq"]
    assert report.ok
