"""The daemons' own checkers on a rendered site, inside a throwaway container of the image.

For each host: the rendered tree is placed at ``/`` with the manifest's owners and modes; the
directory is built the way apply builds it (``slapadd -n0`` of cn=config into an empty
slapd.d, ``slapadd -n1`` of the DIT, each exit status checked) and ``slaptest`` run; Postfix's
``postfix check`` and ``postconf -n`` and Dovecot's ``doveconf -n`` must pass without a warning.
Since neither of the last two reads the LDAP files, slapd is then started, the service and
account passwords are set through RFC 3062 (``ldappasswd``, the server hashes), every
Postfix LDAP table is queried with ``postmap -q`` for a key of the site it finds and one it does
not (answers computed from the lookups as data) and a key nobody has, Dovecot
authenticates an account (``doveadm auth test``) and resolves its home, and ``slapacl``
answers the ACL's expectation matrix. On the host that serves client settings, ``nginx -t``
checks the whole nginx configuration and the settings service answers an autoconfig request.
The container has no network at all.
"""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

from mailstack import render as rendering
from mailstack import resources
from mailstack.container import Container, image_exists
from mailstack.errors import ToolError
from mailstack.findings import Check
from mailstack.ldap import slapacl
from mailstack.plan import HostPlan, SitePlan, acl, dit, layout, postfix
from mailstack.site.model import Site

OFFLINE_BUILD = resources.ROLES / "slapd" / "files" / "build-offline.sh"
"""The one offline build of slapd's configuration and database (the role runs it too)."""
BUILD_SCRIPT = "/root/mailstack-build-offline.sh"


def _tail(text: str, lines: int = 6) -> str:
    return "\n      ".join(text.strip().splitlines()[-lines:])


class _HostRun:
    def __init__(self, site: Site, host: HostPlan, box: Container,
                 secrets: dict[str, str]) -> None:
        self.site, self.host, self.box, self.secrets = site, host, box, secrets
        self.verdicts: list[Check] = []

    def sh(self, script: str, *, user: str | None = None) -> tuple[int, str, str]:
        proc = self.box.exec(["sh", "-c", script], user=user, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr

    def verdict(self, name: str, ok: bool, detail: str = "") -> bool:
        self.verdicts.append(Check(name, self.host.name, ok, "" if ok else detail))
        return ok

    def step(self, name: str, script: str, *, quiet: bool = False, user: str | None = None) -> bool:
        """Run a script; pass on exit 0 (and, with ``quiet``, nothing on stderr)."""
        rc, out, err = self.sh(script, user=user)
        ok = rc == 0 and not (quiet and err.strip())
        return self.verdict(name, ok, f"exit {rc}: {_tail(err or out)}")

    def place(self, tree: Path) -> bool:
        self.box.put_tree(tree, "/")
        # the base role's vmail user (Dovecot's auth-userdb listener and quota-warning service
        # name it), as apply creates it before any daemon starts
        vmail = self.host.facts["vmail"]
        lines = [f"getent group {vmail['user']} >/dev/null || groupadd -r -g {vmail['gid']} "
                 f"{vmail['user']}",
                 f"getent passwd {vmail['user']} >/dev/null || useradd -r -u {vmail['uid']} "
                 f"-g {vmail['user']} -d {vmail['dir']} -M -s /usr/sbin/nologin {vmail['user']}"]
        lines += [f"chown {f.owner}:{f.group} {shlex.quote(f.path)} && "
                 f"chmod {f.mode:04o} {shlex.quote(f.path)}" for f in self.host.files]
        return self.step("rendered files placed with the manifest's owners and modes",
                         "set -e\n" + "\n".join(lines))

    def ldap(self) -> bool:
        """The slapd role's own offline build (its files/build-offline.sh), step by step."""
        self.box.put_file(BUILD_SCRIPT, OFFLINE_BUILD.read_text(encoding="utf-8"), 0o755)
        args = " ".join(shlex.quote(a) for a in (layout.CONFIG_LDIF, layout.DIT_LDIF,
                                                 layout.SLAPD_D, layout.SLAPD_DB_DIR,
                                                 layout.SLAPD_RUN_DIR, "openldap"))
        ok = self.step("slapadd -n0: cn=config into an empty slapd.d",
                       f"systemctl stop slapd 2>/dev/null; rm -rf {layout.SLAPD_D} "
                       f"{layout.SLAPD_DB_DIR}; {BUILD_SCRIPT} config {args}")
        if "ldap-replica" in self.host.roles:
            # a replica's tree comes from the provider (syncrepl retries while there is none)
            ok = ok and self.step("slapadd -n1: an empty database (replica)",
                                  f"{BUILD_SCRIPT} empty {args}")
            ok = ok and self.step("slaptest", f"{BUILD_SCRIPT} test {args}")
            return ok and self.step("slapd starts with the rendered configuration (replica)",
                                    "systemctl restart slapd && systemctl is-active slapd")
        ok = ok and self.step("slapadd -n1: the directory tree", f"{BUILD_SCRIPT} tree {args}")
        ok = ok and self.step("slaptest", f"{BUILD_SCRIPT} test {args}")
        ok = ok and self.step("slapd starts with the rendered configuration",
                              "systemctl restart slapd && systemctl is-active slapd")
        return ok

    def set_passwords(self) -> bool:
        """RFC 3062 Password Modify over ldapi as root, as apply does."""
        targets = [(self.host.facts["service_dns"][s], self.secrets[layout.secret_service(s)])
                   for s in layout.SERVICE_ACCOUNTS]
        for account in self.site.accounts:
            name = layout.account_secret(account)
            targets.append((str(dit.account_dn(self.site, account.mail)), self.secrets[name]))
        lines = ["set -e"]
        for i, (who, password) in enumerate(targets):
            path = f"/root/.mailstack-pw-{i}"
            self.box.put_file(path, password, 0o600)
            lines.append(f"ldappasswd -Q -Y EXTERNAL -H ldapi:/// -T {path} {shlex.quote(who)}")
            lines.append(f"rm -f {path}")
        return self.step("passwords set through RFC 3062 (ldappasswd, the server hashes)",
                         "\n".join(lines))

    def slapacl(self) -> None:
        rows = [e.__dict__ for e in acl.matrix(self.site)]
        _, out, _ = self.sh(slapacl.script(rows))
        wrong = slapacl.disagreements(rows, out)
        self.verdict(f"slapacl: {len(rows)} expected accesses of the ACL matrix",
                     not wrong, "\n      ".join(wrong[:8]))

    def postfix(self) -> None:
        self.step("postfix check (no warnings)", "postfix check", quiet=True)
        self.step("postconf -n (no warnings)", "postconf -n >/dev/null", quiet=True)

    def postmap(self) -> None:
        """Each Postfix LDAP table, asked for a key of the site it finds and one it does not
        (an unlocked account in a locked-addresses table), the answers expected from the
        lookups as data (``postfix.table_answer``), then for a key nobody has."""
        keys = {"account": [a.mail for a in self.site.accounts],
                "alias": list(dit.alias_targets(self.site)),
                "domain": list(self.site.domains),
                "list": list(dit.group_addresses(self.site))}
        domain = self.site.domains[0]
        for lookup in dit.lookups(self.site, self.host.name):
            if lookup.service != "postfix":
                continue
            table = f"ldap:/etc/postfix/ldap/{lookup.name}.cf"
            answers = {k: postfix.table_answer(self.site, lookup.name, k, self.host.name)
                       for k in keys[lookup.key]}
            asked = [k for k in answers if answers[k]][:1] + \
                [k for k in answers if not answers[k]][:1]
            for key in asked:
                want = answers[key]
                rc, out, err = self.sh(f"postmap -q {shlex.quote(key)} {table}")
                got = {v.strip() for v in out.strip().split(",") if v.strip()}
                ok = (rc == 0 and got == want) if want else (rc == 1 and not got)
                self.verdict(f"postmap -q {key} {table}" + ("" if want else " finds nothing"),
                             ok and not err.strip(),
                             f"exit {rc}, got {sorted(got)}, expected {sorted(want)} "
                             f"{_tail(err)}")
            nobody = f"nobody-{lookup.key}@{domain}" if lookup.key != "domain" else \
                f"not-{domain}"
            rc, out, err = self.sh(f"postmap -q {shlex.quote(nobody)} {table}")
            self.verdict(f"postmap -q {nobody} {table} finds nothing",
                         rc == 1 and not out.strip() and not err.strip(),
                         f"exit {rc}: {out.strip()} {_tail(err)}")
            if asked:
                self.outside_costs_no_lookup(lookup.name, asked[0])
        self.list_gate()

    def list_gate(self) -> None:
        """The lists' table behind its gate (``pipemap:``, plan/postfix.alias_maps): a list
        address gets its members; an account's address is answered from the gate alone, even
        with the LDAP table pointing at a socket that does not exist; a list address then does
        try LDAP (the control)."""
        rows = postfix.list_addresses(self.site)
        if not rows or not self.site.accounts:
            return
        name = "virtual_alias_groups"
        address, account = rows[0][0], self.site.accounts[0].mail
        label = f"pipemap:{{list_addresses, {name}}}"

        def gate(table: str) -> str:
            return shlex.quote(f"pipemap:{{texthash:{postfix.LIST_ADDRESSES}, {table}}}")

        want = postfix.table_answer(self.site, name, address, self.host.name)
        rc, out, err = self.sh(f"postmap -q {shlex.quote(address)} "
                               f"{gate(f'ldap:/etc/postfix/ldap/{name}.cf')}")
        got = {v.strip() for v in out.strip().split(",") if v.strip()}
        self.verdict(f"postmap -q {address} {label}: its members",
                     rc == 0 and got == want and not err.strip(),
                     f"exit {rc}, got {sorted(got)}, expected {sorted(want)} {_tail(err)}")
        dead = gate(f"ldap:{self.unreachable_copy(name)}")
        rc, out, err = self.sh(f"postmap -q {shlex.quote(account)} {dead}")
        self.verdict(f"postmap -q {account} {label} asks no LDAP server",
                     rc == 1 and not out.strip() and not err.strip(),
                     f"exit {rc}: {out.strip()} {_tail(err)}")
        rc, _, err = self.sh(f"postmap -q {shlex.quote(address)} {dead}")
        self.verdict(f"postmap -q {address} {label} asks LDAP (control)",
                     "Unable to bind" in err or "Can't contact" in err,
                     f"exit {rc}, no LDAP error: {_tail(err)}")

    def unreachable_copy(self, name: str) -> str:
        """A copy of the LDAP table ``name`` pointing at a socket that does not exist; its path."""
        copy = f"/tmp/mailstack-{name}-unreachable.cf"
        self.sh(f"sed 's|^server_host = .*|server_host = ldapi://%2Fnonexistent|' "
                f"/etc/postfix/ldap/{name}.cf > {copy}")
        return copy

    def outside_costs_no_lookup(self, name: str, local_key: str) -> None:
        """A copy of the table pointing at a socket that does not exist: an outside address
        must be answered "not found" without a word about LDAP (the table's ``domain``), a key
        of the site's own domains must try LDAP and fail (the control)."""
        copy = self.unreachable_copy(name)
        outside = "someone@outside.mailstack.invalid"
        rc, out, err = self.sh(f"postmap -q {outside} ldap:{copy}")
        self.verdict(f"postmap -q {outside} ldap:{name}.cf asks no LDAP server",
                     rc == 1 and not out.strip() and not err.strip(),
                     f"exit {rc}: {out.strip()} {_tail(err)}")
        rc, _, err = self.sh(f"postmap -q {shlex.quote(local_key)} ldap:{copy}")
        self.verdict(f"postmap -q {local_key} ldap:{name}.cf asks LDAP (control)",
                     "Unable to bind" in err or "Can't contact" in err,
                     f"exit {rc}, no LDAP error: {_tail(err)}")

    def dovecot(self) -> None:
        if not self.step("doveconf -n (no warnings)", "doveconf -n >/dev/null", quiet=True):
            return
        if not self.step("dovecot starts with the rendered configuration",
                         "systemctl restart dovecot && systemctl is-active dovecot"):
            return
        if not self.site.accounts:
            return
        account = self.site.accounts[0]
        password = self.secrets[layout.account_secret(account)]
        path = "/root/.mailstack-auth"
        self.box.put_file(path, password, 0o600)
        self.step(f"doveadm auth test {account.mail} (right password)",
                  f'doveadm auth test {shlex.quote(account.mail)} "$(cat {path})"')
        rc, out, err = self.sh(f"doveadm auth test {shlex.quote(account.mail)} wrong-password")
        self.verdict(f"doveadm auth test {account.mail} (wrong password refused)", rc == 77,
                     f"exit {rc}: {_tail(err or out)}")
        rc, out, err = self.sh(f"doveadm user -f home {shlex.quote(account.mail)}")
        home = dit.mail_home(account.mail)
        self.verdict(f"doveadm user {account.mail}: home {home}",
                     rc == 0 and out.strip() == home, f"exit {rc}: {out.strip()} {_tail(err)}")
        self.sh(f"rm -f {path}")
        self.deny_passdb()

    def sieve(self) -> None:
        """The site's Sieve scripts compile (sievec; apply's staged check does the same)."""
        scripts = sorted(f.path for f in self.host.files if f.path.endswith(".sieve"))
        if scripts:
            self.step(f"sievec: the site's {len(scripts)} Sieve script(s) compile",
                      " && ".join(f"sievec {shlex.quote(path)}" for path in scripts))

    def web(self) -> None:
        """The client settings' site: ``nginx -t`` on the whole configuration as apply leaves
        it (Debian's default site removed), and the service answers an autoconfig request."""
        web = self.host.facts.get("web")
        if not web:
            return
        self.step("nginx -t (the client settings' site, Debian's default removed)",
                  f"rm -f {' '.join(shlex.quote(p) for p in web['remove'])} && nginx -t -q",
                  quiet=True)
        domain = self.site.domains[0].lower()
        url = (f"http://127.0.0.1:{web['port']}/mail/config-v1.1.xml?emailaddress="
               f"check%40{domain}")
        fetch = (f"import sys, time, urllib.request\nfor _ in range(50):\n    try:\n"
                 f"        body = urllib.request.urlopen({url!r}, timeout=5).read()\n"
                 f"        break\n    except OSError:\n        time.sleep(0.1)\n"
                 f"else:\n    sys.exit('no answer')\n"
                 f"sys.exit(0 if b'<incomingServer' in body else body[:300])\n")
        self.box.put_file("/root/.mailstack-fetch.py", fetch, 0o600)
        self.step(f"the client settings service answers autoconfig for {domain}",
                  f"python3 -I {web['handler']} --port {web['port']} {web['data']} "
                  "2>/dev/null & pid=$!; python3 /root/.mailstack-fetch.py; rc=$?; "
                  "kill $pid; exit $rc")

    def deny_passdb(self) -> None:
        """The first (deny) passdb: an account's closed service is refused with its right
        password, an open one of the same account accepted (the control)."""
        account = next((a for a in self.site.accounts
                        if a.enabled and dit.disabled_services(a)), None)
        if account is None:
            return
        closed = dit.disabled_services(account)[0]
        opened = next(s for s in dit.DOVECOT_SERVICE.values() if s not in
                      dit.disabled_services(account))
        path = "/root/.mailstack-auth"
        self.box.put_file(path, self.secrets[layout.account_secret(account)], 0o600)
        user = shlex.quote(account.mail)
        rc, out, err = self.sh(f'doveadm auth test -x service={closed} {user} "$(cat {path})"')
        self.verdict(f"doveadm auth test -x service={closed} {account.mail} refused (deny "
                     "passdb)", rc == 77 and "user_disabled" in out,
                     f"exit {rc}: {_tail(err or out)}")
        self.step(f"doveadm auth test -x service={opened} {account.mail} (control)",
                  f'doveadm auth test -x service={opened} {user} "$(cat {path})"')
        self.sh(f"rm -f {path}")


def check_host(site: Site, host: HostPlan, tree: Path, secrets: dict[str, str]) -> list[Check]:
    with Container.throwaway(f"mailstack-check-{host.name}", host.hostname) as box:
        run = _HostRun(site, host, box, secrets)
        if not run.place(tree):
            return run.verdicts
        if "ldap-replica" in host.roles:
            run.ldap()
        ldap_ok = "ldap" in host.roles and run.ldap()
        if "mta" in host.roles:
            run.postfix()
        if ldap_ok:
            ldap_ok = run.set_passwords()
            run.slapacl()
        if ldap_ok and "mta" in host.roles:
            run.postmap()
        if ldap_ok and "imap" in host.roles:
            run.dovecot()
        elif "imap" in host.roles:
            run.step("doveconf -n (no warnings)", "doveconf -n >/dev/null", quiet=True)
        if "imap" in host.roles:
            run.sieve()
        run.web()
        return run.verdicts


def check_plan(site: Site, plan: SitePlan, rendered: dict[str, list[rendering.RenderedFile]],
               secrets: dict[str, str]) -> list[Check]:
    """Render to a temporary folder and run every host's checkers; one verdict per check."""
    if not image_exists():
        raise ToolError("the image localhost/mailstack-lab:bookworm is missing: "
                        "run `mailstack lab setup` (or `make image`)")
    with tempfile.TemporaryDirectory(prefix="mailstack-check-") as tmp:
        tree = rendering.write_tree(plan, rendered, Path(tmp))
        verdicts: list[Check] = []
        for name, host in plan.hosts.items():
            verdicts += check_host(site, host, tree / name, secrets)
        return verdicts
