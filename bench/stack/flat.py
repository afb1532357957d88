"""The mail host's flat configuration, for comparison with the site's LDAP one.

Run on the mail host as ``python3 -c TEXT prepare`` or ``... use ldap|flat on|off``.

prepare: every Postfix LDAP table (/etc/postfix/ldap/*.cf) is dumped with ``postmap -q -`` for
every address the directory holds into /etc/postfix/bench/NAME, a ``hash:`` map; Dovecot's
passdbs and userdb become ``passwd-file``s in /etc/dovecot/bench/ with the accounts' own password
hashes (OpenLDAP's {ARGON2} is Dovecot's {ARGON2I} or {ARGON2ID}, the same string), their homes,
quotas and ACL groups, and a deny file per service for the locked accounts and the services
refused to an account. The site's main.cf, master.cf and dovecot.conf are kept as NAME.ldap
(the first time) and rewritten into NAME.flat.

use VARIANT CACHE: install that variant's files (auth_cache_size = 0 when CACHE is off), then
``postfix reload`` and ``doveadm reload``.
"""
import base64
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

LDAP = ["-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"]
PF, DC = "/etc/postfix", "/etc/dovecot"
FILES = [f"{PF}/main.cf", f"{PF}/master.cf", f"{DC}/dovecot.conf"]
SERVICES = ["imap", "pop3", "smtp", "submission", "lmtp", "sieve", "managesieve", "doveadm"]


def search(base, filt, *attrs, scope="sub"):
    out = subprocess.run(["ldapsearch", *LDAP, "-LLL", "-o", "ldif-wrap=no", "-s", scope,
                          "-b", base, filt, *attrs], capture_output=True, check=True)
    entries, cur = [], None
    for raw in out.stdout.decode().splitlines():
        if not raw:
            cur = None
            continue
        name, _, value = raw.partition(":")
        value = (base64.b64decode(value[2:]).decode() if value.startswith(": ")
                 else value[1:])
        if cur is None:
            cur = {}
            entries.append(cur)
        cur.setdefault(name.lower(), []).append(value)
    return entries


def write(path, text, mode=0o640, group="root"):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    shutil.chown(tmp, "root", group)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def prepare():
    suffix = search("", "(objectClass=*)", "namingContexts", scope="base")[0]["namingcontexts"][0]
    keys = sorted({v.lower() for e in search(suffix, "(|(mail=*)(mailLocalAddress=*))", "mail",
                                             "mailLocalAddress")
                   for v in e.get("mail", []) + e.get("maillocaladdress", [])})
    os.makedirs(f"{PF}/bench", exist_ok=True)
    rows = 0
    for name in sorted(os.listdir(f"{PF}/ldap")):
        if not name.endswith(".cf"):
            continue
        got = subprocess.run(["postmap", "-q", "-", f"ldap:{PF}/ldap/{name}"],
                             input="\n".join(keys) + "\n", capture_output=True, text=True)
        if "fatal" in got.stderr or "error" in got.stderr:
            sys.exit(f"postmap -q - {name}: {got.stderr}")
        table = f"{PF}/bench/{name[:-3]}"
        write(table, got.stdout)
        rows += len(got.stdout.splitlines())
        subprocess.run(["postmap", f"hash:{table}"], check=True)
    for path in FILES:
        if not os.path.exists(path + ".ldap"):
            shutil.copy2(path, path + ".ldap")
    for path in FILES[:2]:
        text = Path(path + ".ldap").read_text()
        text = re.sub(r"proxy:ldap:/etc/postfix/ldap/(\w+)\.cf", r"hash:/etc/postfix/bench/\1",
                      text)
        write(path + ".flat", text, 0o644)

    accounts = search(suffix, "(objectClass=CourierMailAccount)", "mail", "userPassword",
                      "homeDirectory", "mailstackQuota", "mailstackAclGroup", "mailstackLocked",
                      "mailstackDisabledService")
    passwd, users = [], []
    deny = {s: [] for s in SERVICES}
    for e in accounts:
        mail = e["mail"][0].lower()
        hashed = e.get("userpassword", [""])[0].rstrip("\0")
        hashed = re.sub(r"^\{ARGON2\}\$argon2(id?)\$",
                        lambda m: f"{{ARGON2{m.group(1).upper()}}}$argon2{m.group(1)}$", hashed)
        passwd.append(f"{mail}:{hashed}")
        extra = []
        if "mailstackquota" in e:
            extra.append(f"quota_rule=*:bytes={e['mailstackquota'][0]}")
        if "mailstackaclgroup" in e:
            extra.append(f"acl_groups={e['mailstackaclgroup'][0]}")
        users.append(f"{mail}:::::{e['homedirectory'][0]}::{' '.join(extra)}")
        for service in SERVICES:
            if (e.get("mailstacklocked") == ["TRUE"]
                    or service in [s.lower() for s in e.get("mailstackdisabledservice", [])]):
                deny[service].append(f"{mail}:")
    os.makedirs(f"{DC}/bench", exist_ok=True)
    write(f"{DC}/bench/passwd", "\n".join(passwd) + "\n", group="dovecot")
    write(f"{DC}/bench/users", "\n".join(users) + "\n", group="dovecot")
    for service, lines in deny.items():
        write(f"{DC}/bench/deny-{service}", "".join(x + "\n" for x in lines), group="dovecot")
    conf = Path(f"{DC}/dovecot.conf.ldap").read_text()
    for old, new in (("dovecot-ldap-deny.conf.ext", "bench/deny-%Ls"),
                     ("dovecot-ldap-passdb.conf.ext", "bench/passwd"),
                     ("dovecot-ldap-userdb.conf.ext", "bench/users")):
        assert f"args = {DC}/{old}" in conf, old
        conf = conf.replace(f"args = {DC}/{old}", f"args = {DC}/{new}")
    conf = re.sub(r"(?m)^(\s*)driver = ldap$", r"\1driver = passwd-file", conf)
    write(f"{DC}/dovecot.conf.flat", conf, 0o644)
    print(f"flat tables: {len(keys)} addresses, {rows} rows in Postfix's hash maps, "
          f"{len(accounts)} accounts in Dovecot's passwd-files")


def use(variant, cache):
    for path in FILES:
        text = Path(f"{path}.{variant}").read_text()
        if path.endswith("dovecot.conf") and cache == "off":
            text, n = re.subn(r"(?m)^auth_cache_size = .*$", "auth_cache_size = 0", text)
            assert n == 1
        write(path, text, 0o644)
    subprocess.run(["postfix", "check"], check=True)
    subprocess.run(["postfix", "reload"], check=True, capture_output=True)
    subprocess.run(["doveadm", "reload"], check=True)
    time.sleep(1.5)


if sys.argv[1] == "prepare":
    prepare()
else:
    use(sys.argv[2], sys.argv[3])
