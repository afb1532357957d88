"""What `mailstack verify` checks on each host itself (pytest-testinfra; run over SSH).

Run by ``mailstack.verify`` with ``--hosts=ssh://root@HOST`` and the environment variables
``MAILSTACK_MANIFEST`` (build/<site>/manifest.json) and ``MAILSTACK_HOST`` (the site's host key).
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from mailstack.ldap import slapacl
from mailstack.plan import layout
from mailstack.plan.dovecot import DENY_FILE


def needs(host_plan: dict, role: str) -> None:
    """Skip a check that does not apply to this host (never report it as passed)."""
    if role not in host_plan["roles"]:
        pytest.skip(f"the host has no {role} role")


def test_file_mode_owner_group_and_content(host, managed_file) -> None:
    path, meta = managed_file
    f = host.file(path)
    assert f.exists, f"{path} is missing"
    assert f"{f.mode:04o}" == meta["mode"], f"{path} has mode {f.mode:04o}, not {meta['mode']}"
    assert (f.user, f.group) == (meta["owner"], meta["group"]), \
        f"{path} is {f.user}:{f.group}, not {meta['owner']}:{meta['group']}"
    assert f.sha256sum == meta["sha256"], f"{path} differs from the rendered file"


def test_services_are_running(host, host_plan) -> None:
    down = [s for s in host_plan["services"] if not host.service(s).is_running]
    assert not down, f"not running: {', '.join(down)}"


def test_postfix_check_is_clean(host, host_plan) -> None:
    needs(host_plan, "mta")
    for cmd in ("postfix check", "postconf -n"):
        out = host.run(cmd)
        assert out.rc == 0 and not out.stderr.strip(), f"{cmd}: exit {out.rc}: {out.stderr}"


def test_doveconf_is_clean(host, host_plan) -> None:
    needs(host_plan, "imap")
    out = host.run("doveconf -n")
    assert out.rc == 0 and not out.stderr.strip(), f"doveconf -n: exit {out.rc}: {out.stderr}"


def test_nginx_serves_only_the_sites_checked_configuration(host, host_plan) -> None:
    web = host_plan["facts"].get("web")
    if not web:
        pytest.skip("the host serves no client settings")
    out = host.run("nginx -t")
    assert out.rc == 0, f"nginx -t: exit {out.rc}: {out.stderr}"
    left = [p for p in web["remove"] if host.file(p).exists]
    assert not left, f"Debian's default still enabled: {', '.join(left)}"
    assert host.socket(f"tcp://127.0.0.1:{web['port']}").is_listening, \
        f"nothing listens on 127.0.0.1:{web['port']} (mailstack-clientconf)"
    assert not host.socket(f"tcp://0.0.0.0:{web['port']}").is_listening, \
        f"the service listens on every address, not loopback only (port {web['port']})"


def test_certbot_holds_the_host_s_certificate_and_the_ports_read_it(host, host_plan) -> None:
    """tls.mode acme (plan/acme.py): certbot's lineage names the host's names, renews with the
    site's ACME server and the deploy hook, and its chain is what the public ports read."""
    acme = host_plan["facts"].get("acme")
    if not acme:
        pytest.skip("the host's public certificate comes from no ACME CA")
    out = host.run(f"openssl x509 -noout -ext subjectAltName -in {shlex.quote(acme['lineage_cert'])}")
    assert out.rc == 0, f"certbot holds no certificate for the host: {out.stderr.strip()}"
    names = sorted(re.findall(r"DNS:([^,\s]+)", out.stdout))
    assert names == sorted(acme["names"]), f"certbot's certificate names {', '.join(names)}"
    live, name, _ = acme["lineage_cert"].rsplit("/", 2)  # /etc/letsencrypt/live, NAME, cert.pem
    renewal = host.file(f"{live.rsplit('/', 1)[0]}/renewal/{name}.conf").content_string
    for key, want in (("server", acme["server"]), ("renew_hook", acme["hook"])):
        assert re.search(rf"^{key} = {re.escape(want)}$", renewal, re.M), \
            f"certbot renews without {key} = {want}"
    chain = host.file(f"{live}/{name}/fullchain.pem").content_string
    assert host.file(acme["cert"]).content_string == chain, \
        f"{acme['cert']} is not certbot's chain (the deploy hook did not install it)"
    assert host.service("certbot.timer").is_enabled, "certbot.timer is not enabled"


def test_slaptest_is_clean(host, host_plan) -> None:
    needs(host_plan, "ldap")
    out = host.run("su -s /bin/sh openldap -c 'slaptest -F /etc/ldap/slapd.d'")
    assert out.rc == 0, f"slaptest: exit {out.rc}: {out.stderr}"


def test_slapd_listens_only_where_the_site_needs_it(host, host_plan) -> None:
    needs(host_plan, "ldap")
    ports = {int(line.split()[3].rsplit(":", 1)[1])
             for line in host.run("ss -Hltn").stdout.splitlines() if line.strip()}
    network = host_plan["facts"]["directory"]["network"]
    open_ports = sorted(ports & {389, 636})
    assert open_ports == ([389] if network else []), (
        f"slapd listens on {open_ports or 'no TCP port'}; the site needs "
        f"{'389 (StartTLS)' if network else 'the ldapi socket only'}")


def _ldapi(host, base: str, filt: str, *attrs: str, scope: str = "sub") -> list[dict]:
    """Entries as root over ldapi: [{"dn": ..., attr: [values]}] (values unwrapped)."""
    out = host.run(f"ldapsearch -LLL -o ldif_wrap=no -Q -Y EXTERNAL -H ldapi:/// -s {scope} "
                   f"-b {shlex.quote(base)} {shlex.quote(filt)} {' '.join(attrs)}")
    assert out.rc in (0, 32), f"ldapsearch: exit {out.rc}: {out.stderr}"
    entries: list[dict] = []
    for line in out.stdout.splitlines():
        name, _, value = line.partition(": ")
        if name == "dn":
            entries.append({"dn": value})
        elif entries and value:
            entries[-1].setdefault(name, []).append(value)
    return entries


def test_the_directory_root_is_root_over_ldapi_without_a_password(host, host_plan) -> None:
    """olcRootDN is root's peercred identity (ppolicy exempts the rootDN), no database has
    an olcRootPW; with ldap.root_password the admin entry exists and its password was set."""
    needs(host_plan, "ldap")
    found = [e["dn"] for e in _ldapi(host, "cn=config", "(olcRootPW=*)", "dn")]
    assert not found, f"olcRootPW is set on {', '.join(found)}"
    facts = host_plan["facts"]
    want = facts["directory"]["root_dn"]
    roots = {e["dn"]: e.get("olcRootDN", ["none"])[0]
             for e in _ldapi(host, "cn=config", "(olcSuffix=*)", "olcRootDN")}
    wrong = [f"{d} has olcRootDN {r}" for d, r in roots.items() if r.lower() != want.lower()]
    assert roots and not wrong, "; ".join(wrong) + f", not root over ldapi ({want})"
    admin = _ldapi(host, facts["admin_dn"], "(objectClass=*)", "userPassword", scope="base")
    if facts["directory"]["root_password"]:
        assert admin, f"the site asks for a root password and {facts['admin_dn']} is missing"
        assert admin[0].get("userPassword") != [facts["slapd"]["placeholder"]], \
            f"the site asks for a root password and {facts['admin_dn']} has none yet"


def test_slapd_checks_new_passwords_against_the_site_policy(host, host_plan) -> None:
    needs(host_plan, "ldap")
    directory = host_plan["facts"]["directory"]
    overlays = _ldapi(host, "cn=config", "(objectClass=olcPPolicyConfig)",
                      "olcPPolicyDefault", "olcPPolicyHashCleartext")
    assert overlays, "slapd has no ppolicy overlay: passwords are not checked"
    assert overlays[0].get("olcPPolicyDefault", [""])[0].lower() == \
        directory["policy_dn"].lower(), f"ppolicy's default policy is " \
        f"{overlays[0].get('olcPPolicyDefault')}, not {directory['policy_dn']}"
    assert overlays[0].get("olcPPolicyHashCleartext") == ["TRUE"], \
        "ppolicy stores cleartext passwords as given (olcPPolicyHashCleartext is not TRUE)"
    policy = _ldapi(host, directory["policy_dn"], "(objectClass=pwdPolicy)", "pwdMinLength",
                    "pwdCheckQuality", "pwdLockout", scope="base")
    assert policy, f"the password policy {directory['policy_dn']} is missing"
    got = {k: policy[0].get(k, ["none"])[0]
           for k in ("pwdMinLength", "pwdCheckQuality", "pwdLockout")}
    want = {"pwdMinLength": str(directory["min_length"]), "pwdCheckQuality": "2",
            "pwdLockout": "FALSE"}
    assert got == want, f"the password policy says {got}, the site {want}"


def test_slapacl_answers_the_acl_matrix(host, host_plan) -> None:
    needs(host_plan, "ldap")
    rows = json.loads(host.file("/var/lib/mailstack/ldap/acl-expectations.json").content_string)
    rows = rows["expectations"]
    wrong = slapacl.disagreements(rows, host.run(slapacl.script(rows)).stdout)
    assert not wrong, "slapacl disagrees with the matrix: " + "; ".join(wrong[:5])


def test_mailbox_homes_resolve_to_one_place(host, host_plan) -> None:
    needs(host_plan, "imap")
    for account in host_plan["facts"]["accounts"]:
        out = host.run(f"doveadm user -f home {shlex.quote(account['mail'])}")
        assert out.rc == 0 and out.stdout.strip() == account["home"], \
            f"{account['mail']}: userdb home {out.stdout.strip()!r} (exit {out.rc}), " \
            f"expected {account['home']}"
        loc = host.run(f"doveadm user -f mail {shlex.quote(account['mail'])}")
        assert loc.stdout.strip() in ("", "maildir:~/Maildir"), \
            f"{account['mail']}: userdb overrides the mail location with {loc.stdout.strip()}"


def test_no_account_logs_in_that_the_site_does_not_have(host, host_plan, record_property) -> None:
    """Dovecot's user iteration (``doveadm user '*'``: every account not locked) against the
    site's enabled accounts and its shared folders' delivery accounts. An account the site
    does not name fails the check; with ``ldap.accounts: directory`` the directory may have
    its own: then they are a note."""
    needs(host_plan, "imap")
    # Dovecot 2.3.19's `doveadm user` has no -A ("user: invalid option -- 'A'"): a user mask
    # iterates the userdb (iterate_filter: accounts that are not locked)
    out = host.run("doveadm user '*'")
    assert out.rc == 0, f"doveadm user '*' failed (exit {out.rc}): {out.stderr.strip()}"
    found = {line.strip().lower() for line in out.stdout.splitlines() if line.strip()}
    facts = host_plan["facts"]
    expected = {a["mail"].lower() for a in facts["accounts"] if a.get("enabled", True)}
    expected |= {mail.lower() for mail in facts.get("delivery_accounts", ())}
    extra = sorted(found - expected)
    if facts.get("accounts_mode") == "directory":
        if extra:
            record_property("note", f"{len(extra)} accounts log in that the site file does not "
                                    f"name (ldap.accounts: directory): {', '.join(extra)}")
        return
    assert not extra, (f"accounts log in that the site does not have: {', '.join(extra)} "
                       "(apply locks them; apply --prune removes them)")


def test_delivery_and_reading_use_one_mail_location(host, host_plan) -> None:
    """LMTP must write where IMAP and POP3 read (the "0 messages while 150 wait" bug)."""
    needs(host_plan, "imap")
    locations = {p: host.run(f"doveconf -h -f protocol={p} mail_location").stdout.strip()
                 for p in ("lmtp", "imap", "pop3")}
    assert len(set(locations.values())) == 1, f"mail_location differs by protocol: {locations}"


def test_the_auth_cache_is_on(host, host_plan) -> None:
    """Dovecot caches logins (plan/dovecot.AUTH_CACHE); whoever changes an account flushes."""
    needs(host_plan, "imap")
    seen = {k: host.run(f"doveconf -h {k}").stdout.strip()
            for k in ("auth_cache_size", "auth_cache_ttl", "auth_cache_negative_ttl")}
    assert seen["auth_cache_size"] not in ("", "0"), f"the auth cache is off: {seen}"
    assert seen["auth_cache_ttl"] not in ("", "0"), f"cached answers never live: {seen}"
    number, _, unit = seen["auth_cache_negative_ttl"].partition(" ")
    assert number.isdigit() and (unit.startswith("sec") or int(number) == 0 or
                                 (unit.startswith("min") and int(number) <= 5)), \
        f"failed lookups are cached long: {seen}"


def test_the_deny_passdb_comes_first(host, host_plan) -> None:
    """Locked accounts and services an account may not use are refused before any password
    is checked (the deny passdb must be the first)."""
    needs(host_plan, "imap")
    conf = host.run("doveconf -n").stdout
    blocks = re.findall(r"^passdb \{\n(.*?)^\}", conf, re.M | re.S)
    assert blocks, "no passdb at all"
    first = dict(line.strip().split(" = ", 1) for line in blocks[0].splitlines() if " = " in line)
    assert first.get("deny") == "yes" and first.get("args") == DENY_FILE, \
        f"the first passdb is not the deny passdb: {first}"


def test_each_account_has_its_quota_and_no_other(host, host_plan) -> None:
    needs(host_plan, "imap")
    wrong = []
    for account in host_plan["facts"]["accounts"]:
        out = host.run(f"doveadm quota get -u {shlex.quote(account['mail'])}")
        row: list[str] = next((line.split() for line in out.stdout.splitlines() if "STORAGE" in line), [])
        # "User quota STORAGE <value> <limit> <percent>", the limit in KiB or "-"
        limit = row[4] if len(row) > 4 else f"(exit {out.rc}: {out.stderr.strip()})"
        want = "-" if account.get("quota") is None else str(account["quota"] // 1024)
        if limit != want:
            wrong.append(f"{account['mail']}: limit {limit} KiB, expected {want}")
    assert not wrong, "; ".join(wrong)


def _postfix_only(host, socket: str, mode: int) -> None:
    path = f"{layout.POSTFIX_QUEUE_DIR}/{socket}"
    f = host.file(path)
    assert f.exists and f.is_socket, f"{path} is missing"
    assert (f.user, f.group, f.mode) == ("postfix", "postfix", mode), (
        f"{path} is {f.user}:{f.group} {f.mode:04o}, not postfix:postfix {mode:04o}")


def test_only_postfix_may_use_the_lmtp_socket(host, host_plan) -> None:
    """Local users cannot hand Dovecot a message directly, with any sender they like."""
    needs(host_plan, "imap")
    _postfix_only(host, layout.LMTP_SOCKET, 0o600)


def test_only_postfix_may_use_the_auth_socket(host, host_plan) -> None:
    """Local users cannot guess passwords at Dovecot's auth service, past every rate limit."""
    needs(host_plan, "imap")
    _postfix_only(host, layout.SASL_SOCKET, 0o660)

def test_fail2ban_runs_the_sites_jails(host, host_plan) -> None:
    want = sorted(host_plan["facts"]["fail2ban"]["jails"])
    # its exit code as text: testinfra takes an exit 255 (fail2ban's, when it is down) for ssh's
    out = host.run('fail2ban-client status 2>&1; echo "exit $?"').stdout.rstrip()
    text, _, code = out.rpartition("exit ")
    said = re.sub(r"^\S+ \S+ fail2ban\s+\[\d+\]: ", "", text.strip(), flags=re.M)
    assert code == "0", f"fail2ban-client status: exit {code}: {said[:200]}"
    listed = re.search(r"Jail list:\s*(.*)", text)
    got = sorted(j.strip() for j in listed.group(1).split(",") if j.strip()) if listed else []
    assert got == want, f"fail2ban runs the jails {got}, not {want}"


def test_each_jail_reads_the_journal_its_daemon_logs_to(host, host_plan) -> None:
    """Postfix's daemons run in postfix@-.service, not in the postfix.service that Debian's
    filter names: a jail that reads the wrong unit never sees a failure."""
    for jail, unit in sorted(host_plan["facts"]["fail2ban"]["units"].items()):
        match = host.run(f"fail2ban-client get {shlex.quote(jail)} journalmatch 2>&1").stdout
        assert f"_SYSTEMD_UNIT={unit}" in match, \
            f"jail {jail} does not read the journal of {unit}: {match.strip()[-200:]}"
        state = host.run(f"systemctl show -p SubState --value {shlex.quote(unit)}").stdout
        assert state.strip() == "running", \
            f"jail {jail} reads the journal of {unit}, which runs no daemon ({state.strip()})"


def test_nftables_answers_so_that_bans_take_effect(host, host_plan) -> None:
    nft = host.run("nft list tables")
    assert nft.rc == 0, f"nft cannot read the firewall, so no ban takes effect: " \
                        f"{nft.stderr.strip()[:200]}"


def test_sieve_scripts_are_compiled_where_dovecot_reads_them(host, host_plan) -> None:
    """Every Sieve script the site renders has its compiled binary beside it, no older than the
    script: LMTP runs as vmail and cannot write it into /etc/dovecot (Pigeonhole then compiles
    at every delivery and logs "need to be pre-compiled using the sievec tool")."""
    needs(host_plan, "imap")
    scripts = sorted(p for p in host_plan["files"] if p.endswith(".sieve"))
    if not scripts:
        pytest.skip("the site renders no Sieve script")
    stale = []
    for script in scripts:
        binary = script[:-len(".sieve")] + ".svbin"
        out = host.run(f"stat -c %Y {shlex.quote(script)} {shlex.quote(binary)}")
        times = out.stdout.split()
        if out.rc != 0 or len(times) != 2 or int(times[1]) < int(times[0]):
            stale.append(f"{binary} ({'missing' if out.rc != 0 else 'older than the script'})")
    assert not stale, f"not compiled: {', '.join(stale)}"
