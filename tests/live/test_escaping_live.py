"""Hostile but valid values, rendered escaped and read back by the real parsers, in one container.

One site holds them all: an account name with quotes, commas, ``#`` and ``=``; DN specials in
addresses (leading ``#``, ``+``, ``=``) and in names; Cyrillic names and folders; a folder name
that is Python code (getmail ``eval()``s its tuples); a getmail user with ``%``, ``;`` and ``#``;
a main.cf value with ``#``, ``,`` and ``=``; a suffix with ``,``, ``#``, ``+``, ``%``, ``\\``;
service and relay passwords with ``#``, quotes and spaces. The checks of ``check --with-daemons``
run on it (slapadd, slaptest, slapacl, postfix check, postconf, doveconf, postmap through LDAP,
doveadm auth and user), then each format is read back: slapd (a base search on every DN, a
filter search on every value, slapcat), postconf and postmap, getmail's own configuration code,
systemd. Last, the limits check enforces are shown to be real: a '#' table key, spaces around a
getmail user, a 256-character unit name, a 100-character relay service.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from mailstack import core, daemons, render, secrets
from mailstack.checks import contexts
from mailstack.container import Container
from mailstack.ldap import filter as lf
from mailstack.ldap import ldif
from mailstack.plan import dit, layout, plan_site, relays
from mailstack.plan import fetch as fetch_plan
from mailstack.plan import postfix as postfix_plan
from mailstack.site.load import load_site
from tests.conftest import example_text, live
from tests.unit.test_apply_ldap_modules import utils as module_ldap

pytestmark = live()

ACCOUNTS = [  # (mail, name): the first is the one the daemons' checks log in as
    ("vanya@krasnoyarsk.example.org", '#1 <Ivan>; +\\ "x", y = z '),
    ("obrien@krasnoyarsk.example.org", "O'Brien"),
    ("ivan.petrov@krasnoyarsk.example.org", "Иван Петров"),
    ("lead_space@krasnoyarsk.example.org", " leading space"),
]
ALIASES = ["#v+w=x@krasnoyarsk.example.org", "o'brien@krasnoyarsk.example.org",
           "a{b}~!$&*?^|c@krasnoyarsk.example.org"]
"""Addresses with DN specials (leading #, +, =) and the rarer characters: aliases of the first
account (Dovecot refuses them as logins); the first is the one postmap -q looks up in LDAP."""
IVAN = 'Ivan "Vanya" Petrov, Jr. #1 = ok'
SEND_AS = "o'brien+x=y@isp.example"
FOLDERS = ("INBOX", "Отправленные", 'a"b', "c\\d", "x\\",
           '", __import__("os").system("touch /tmp/pwned"), "', "%(sender)s")
FETCH_USER = "o%(x)s;l #g=a"
BANNER = "$myhostname ESMTP #1, ok = yes"
BASE = r"o=Krasnoyarsk Branch\, #1 \+ %u\\x,dc=example,dc=org"
"""A suffix with DN specials, '#' (a comment to Dovecot unless quoted) and '%' (an expansion to
Postfix and Dovecot unless doubled): in slapd's config and ACL, Postfix's and Dovecot's files."""
SERVICE_PASSWORD = 'pass word # not a comment "q" %u $x \\ = ;'
"""Postfix's bind_pw and Dovecot's dnpass: the daemons bind with it (postmap -q, doveadm)."""
DN_SPECIALS = ["#lead", " lead and trail ", "a+b", "a,b", 'a"b', "a\\b", "<a>", "a;b", "a=b",
               "Отправленные"]
"""cn values of extra entries: every character RFC 4514 escapes, through dn.py and ldapadd."""


def q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted one


def hostile_site(root: Path) -> Path:
    text = example_text()
    edits = [
        ("name: Ivan Petrov", f"name: {q(IVAN)}"),
        ("accounts:\n", "accounts:\n" + "".join(
            f"  - {{mail: {q(m)}, name: {q(n)}" + (
                f", aliases: [{', '.join(q(a) for a in ALIASES)}]" if i == 0 else "") + "}\n"
            for i, (m, n) in enumerate(ACCOUNTS))),
        ("    aliases: [buh@krasnoyarsk.example.org]\n",
         f"    aliases: [buh@krasnoyarsk.example.org]\n    send_as: [{q(SEND_AS)}]\n"),
        ("senders: {shop@provider.example: provider}",
         f"senders: {{shop@provider.example: provider, {q(SEND_AS)}: provider}}"),
        ("folders: [INBOX]", "folders: [" + ", ".join(q(f) for f in FOLDERS) + "]"),
        ("user: olga@provider.example", f"user: {q(FETCH_USER)}"),
        ("base: dc=krasnoyarsk,dc=example,dc=org", f"base: {q(BASE)}"),
    ]
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    text += f"postfix:\n  main: {{smtpd_banner: {q(BANNER)}}}\n"
    site = root / "site.yml"
    site.write_text(text, encoding="utf-8")
    # bind_pw and dnpass: key = value files (Dovecot's quoted, so spaces around it too)
    (root / "secrets" / "ldap" / "postfix").write_text(SERVICE_PASSWORD + "\n")
    (root / "secrets" / "ldap" / "dovecot").write_text(f" {SERVICE_PASSWORD} \n")
    (root / "secrets" / "provider" / "shop").write_text(SERVICE_PASSWORD + "\n")  # SASL map
    for mail, _ in ACCOUNTS:
        path = root / "secrets" / layout.secret_account(mail)
        path.write_text("a-password-for-the-test\n")
        path.chmod(0o600)
    return site


LDAP_READ = r"""
import json, sys, ldap3
conn = ldap3.Connection(ldap3.Server("ldapi://%2Frun%2Fslapd%2Fldapi", get_info=ldap3.NONE),
                        authentication=ldap3.SASL, sasl_mechanism=ldap3.EXTERNAL,
                        sasl_credentials=b"", auto_bind=True)
out = []
for q in json.load(sys.stdin):
    scope = {"base": ldap3.BASE, "one": ldap3.LEVEL, "sub": ldap3.SUBTREE}[q["scope"]]
    conn.search(q["base"], q["filter"], search_scope=scope, attributes=["cn", "mail"])
    out.append([{"dn": e.entry_dn, "cn": e.entry_attributes_as_dict.get("cn", []),
                 "mail": e.entry_attributes_as_dict.get("mail", [])} for e in conn.entries])
print(json.dumps(out))
"""

GETMAIL_READ = r"""
# /usr/bin/getmail's own steps: RawConfigParser, then the retriever and destination classes
import configparser, json, sys
from getmailcore import destinations, retrievers
out = {}
for path in sys.argv[1:]:
    cp = configparser.RawConfigParser()
    with open(path) as f:
        cp.read_file(f)
    def args(section):
        return {k: v for k, v in cp.items(section) if k != "type"}
    r = getattr(retrievers, cp.get("retriever", "type"))(
        getmaildir="/tmp", configparser=cp, **args("retriever"))
    d = getattr(destinations, cp.get("destination", "type"))(configparser=cp,
                                                             **args("destination"))
    out[path] = {"username": r.conf["username"], "mailboxes": list(r.conf.get("mailboxes", ())),
                 "arguments": list(d.conf["arguments"]),
                 "password_command": list(r.conf["password_command"])}
print(json.dumps(out, ensure_ascii=False))
"""


def test_hostile_values_round_trip_through_the_real_parsers(example: Path, tmp_path: Path) -> None:
    site_file = hostile_site(example.parent)
    assert [str(f) for f in core.check(site_file).findings] == []
    site = load_site(site_file)
    store = secrets.SecretStore(site_file.parent / "secrets")
    values = {r.name: store.read(r.name) for r in secrets.required(site)}
    plan = plan_site(site, values)
    tree = render.write_tree(plan, render.render_plan(plan), tmp_path / "build")
    host = plan.hosts["mail"]

    with Container.throwaway("mailstack-escape", host.hostname) as box:
        run = daemons._HostRun(site, host, box, values)

        def sh(script: str, stdin: str | None = None) -> str:
            proc = box.exec(["sh", "-c", script], input=stdin, timeout=120)
            assert proc.returncode == 0, f"{script}: {proc.stderr}"
            return proc.stdout

        # what check --with-daemons runs, in this container
        assert run.place(tree / "mail")
        assert run.ldap()
        run.postfix()
        assert run.set_passwords()
        run.slapacl()
        run.postmap()
        run.dovecot()
        failed = [str(v) for v in run.verdicts if not v.ok]
        assert failed == [], "\n".join(failed)
        names = " | ".join(v.name for v in run.verdicts)
        assert f"doveadm auth test {ACCOUNTS[0][0]} (right password)" in names
        assert f"postmap -q {ALIASES[0]} ldap:/etc/postfix/ldap/virtual_alias_maps.cf" in names

        # LDIF and DNs: slapadd took every value; slapd finds each entry by our DN string and
        # by our filter, and gives the exact values back
        people = dit.ou(site, layout.OU_PEOPLE)
        apps = dit.ou(site, layout.OU_APPLICATIONS)
        extra = [ldif.Entry(apps.child("cn", v), (("objectClass", "applicationProcess"),
                                                  ("cn", v))) for v in DN_SPECIALS]
        box.put_file("/root/extra.ldif", ldif.dumps(extra))
        sh("ldapadd -Q -Y EXTERNAL -H ldapi:/// -f /root/extra.ldif >/dev/null")
        everyone = [*ACCOUNTS, (site.accounts[len(ACCOUNTS)].mail, IVAN)]
        queries = []
        for mail, name in everyone:
            queries.append({"base": str(dit.account_dn(site, mail)), "scope": "base",
                            "filter": "(objectClass=*)"})
            queries.append({"base": str(people), "scope": "sub", "filter": lf.render(
                lf.and_(lf.Eq("cn", name), lf.Eq("mail", mail)))})
        aliases = dit.ou(site, layout.OU_ALIASES)
        for address in ALIASES:
            queries.append({"base": str(dit.alias_dn(site, address)), "scope": "base",
                            "filter": "(objectClass=*)"})
            queries.append({"base": str(aliases), "scope": "one",
                            "filter": lf.render(lf.Eq("mail", address))})
        for entry in extra:
            queries.append({"base": str(entry.dn), "scope": "base", "filter": "(objectClass=*)"})
            queries.append({"base": str(apps), "scope": "one",
                            "filter": lf.render(lf.Eq("cn", entry.values("cn")[0]))})
        box.put_file("/root/ldap_read.py", LDAP_READ)
        found = json.loads(sh("python3 /root/ldap_read.py", json.dumps(queries)))
        for i, (mail, name) in enumerate(everyone):
            by_dn, by_filter = found[2 * i], found[2 * i + 1]
            assert [(e["cn"], e["mail"]) for e in by_dn] == [([name], [mail])], mail
            assert [e["dn"] for e in by_filter] == [by_dn[0]["dn"]], mail
        found = found[2 * len(everyone):]
        for k, address in enumerate(ALIASES):
            by_dn, by_filter = found[2 * k], found[2 * k + 1]
            assert [e["mail"] for e in by_dn] == [[address]], address
            assert [e["dn"] for e in by_filter] == [by_dn[0]["dn"]], address
        found = found[2 * len(ALIASES):]
        for j, value in enumerate(DN_SPECIALS):
            by_dn, by_filter = found[2 * j], found[2 * j + 1]
            assert [e["cn"] for e in by_dn] == [[value]], value
            assert [e["dn"] for e in by_filter] == [by_dn[0]["dn"]], value
        dumped = sh("slapcat -n1")  # slapcat's LDIF, read by the apply modules' LDIF reader
        cns = {v.decode() for _, attrs in module_ldap.parse_ldif(dumped) for a, v in attrs
               if a.lower() == "cn"}
        assert {IVAN, *(n for _, n in ACCOUNTS), *DN_SPECIALS} <= cns

        # Postfix: main.cf and the texthash tables give the values back
        assert sh("postconf -h smtpd_banner").rstrip("\n") == BANNER
        for table, want in (("own_senders", postfix_plan.OWN_SENDER_REFUSED),
                            ("sender_login_extra", "olga@krasnoyarsk.example.org"),
                            ("sender_transport", "relay-provider:[smtp.provider.example]:465")):
            got = sh(f"postmap -q {shlex.quote(SEND_AS)} texthash:/etc/postfix/{table}")
            assert got.rstrip("\n") == want, table
        got = sh("postmap -q '[smtp.provider.example]:465' "
                 f"texthash:{relays.sasl_path('provider')}")
        assert got.rstrip("\n") == f"shop@provider.example:{SERVICE_PASSWORD}"
        # why check refuses a table key that starts with '#': Postfix drops the line
        box.put_file("/root/hash-table", "#x@isp.example REJECT\n")
        assert box.exec(["postmap", "-q", "#x@isp.example", "texthash:/root/hash-table"]
                        ).returncode == 1

        # getmail: its own configuration code reads the folders, user and arguments exactly,
        # and the folder that is Python code stays a string
        imap = site.fetch[1]
        rc = f"{fetch_plan.CONFIG_DIR}/{fetch_plan.fetch_id(imap)}.getmailrc"
        box.put_file("/root/getmail_read.py", GETMAIL_READ)
        out = sh(f"python3 /root/getmail_read.py {shlex.quote(rc)}")
        conf = json.loads(out.splitlines()[-1])[rc]  # getmail traces its checks on stdout
        assert conf["mailboxes"] == list(FOLDERS)
        assert conf["username"] == FETCH_USER
        assert conf["arguments"] == ["-i", "-f", "%(sender)", "--", imap.account]
        # why check refuses spaces around the user: getmail's parser strips them
        padded = sh(f"cat {shlex.quote(rc)}").replace(f"username = {FETCH_USER}\n",
                                                     f"username =  {FETCH_USER} \n")
        assert f"username =  {FETCH_USER} \n" in padded
        box.put_file("/root/padded.getmailrc", padded)
        out = sh("python3 /root/getmail_read.py /root/padded.getmailrc")
        assert json.loads(out.splitlines()[-1])["/root/padded.getmailrc"]["username"] == FETCH_USER
        # the unit's StateDirectory= holds getmail's message log; outside systemd, make it
        log_dir = fetch_plan.message_log(imap).rsplit("/", 1)[0]
        sh(f"mkdir -p {shlex.quote(log_dir)}")
        sh(f"getmail --rcfile {shlex.quote(rc)} --getmaildir /tmp --dump >/dev/null")
        assert box.exec(["test", "-e", "/tmp/pwned"]).returncode == 1

        # systemd: every instance name is a valid unit, and %i resolves to the rendered files
        sh("systemctl daemon-reload")
        for fetch in site.fetch:
            ident = fetch_plan.fetch_id(fetch)
            unit = f"{fetch_plan.UNIT}{ident}"
            # a valid unit name comes back from --mangle unchanged: nothing to escape
            assert sh(f"systemd-escape --mangle {unit}.timer").strip() == f"{unit}.timer"
            proc = box.exec(["systemd-analyze", "verify", f"{unit}.timer"])
            assert proc.returncode == 0, proc.stderr
            exec_start = sh(f"systemctl show -P ExecStart {unit}.service")
            # %i names the run's JSON, and the JSON names the getmailrc: both by the same id
            assert f" {fetch_plan.CONFIG_DIR}/{ident}.json " in exec_start + " "
            run = json.loads(sh(f"cat {fetch_plan.CONFIG_DIR}/{ident}.json"))
            assert run["rcfile"] == f"{fetch_plan.CONFIG_DIR}/{ident}.getmailrc"
            sh(f"test -f {run['rcfile']}")
            # the instance's drop-in (named by the same id) is the one systemd loads
            assert sh(f"systemctl show -P DropInPaths {unit}.timer").split() == [
                f"/etc/systemd/system/{unit}.timer.d/interval.conf"]
            assert "OnUnitInactiveUSec=5min" in sh(f"systemctl show -P TimersMonotonic "
                                                   f"{unit}.timer")

        # why check limits unit names: systemd takes 255 characters and refuses 256
        longest_unit = f"{fetch_plan.UNIT}{'x' * (contexts.UNIT_NAME_MAX - 24)}.service"
        assert len(longest_unit) == contexts.UNIT_NAME_MAX
        sh(f"systemd-analyze verify {longest_unit}")
        refused = box.exec(["systemd-analyze", "verify", longest_unit.replace("@", "@x")])
        assert refused.returncode != 0 and "Invalid argument" in refused.stderr

        # why check limits relay names: postfix check passes a service whose socket path is
        # too long, and Postfix then does not start
        longest = "relay-" + "r" * contexts.RELAY_NAME_MAX
        sh(f"echo '{longest} unix - - y - - smtp' >> /etc/postfix/master.cf && "
           "systemctl restart postfix@-")  # the longest name check allows: Postfix runs
        too_long = "relay-" + "s" * 100
        sh(f"echo '{too_long} unix - - y - - smtp' >> /etc/postfix/master.cf && postfix check")
        assert box.exec(["systemctl", "restart", "postfix@-"]).returncode != 0
