"""`mailstack verify`: prove the live site — mail flows, TLS holds, the ACL denies.

Two kinds of checks, each a named PASS/FAIL with its evidence:

* network probes (``probe.py``) from a client that is *not* the server: in the lab, the lab's
  client container; against real servers, the machine verify runs on;
* host checks (``testinfra/test_host.py``, pytest-testinfra over SSH): files, services, the
  daemons' own checkers, the slapacl matrix, where Dovecot puts each mailbox.

In the lab, mail the server relays out is looked for at the relay fixture it was sent to.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mailstack import core
from mailstack.errors import InputError, MailstackError, ToolError
from mailstack.findings import Check
from mailstack.ldap import filter as lf
from mailstack.plan import SitePlan, clients, dit, folders, layout, postfix, slapd, topology, web
from mailstack.site.model import Site

if TYPE_CHECKING:
    from mailstack.lab.state import LabState

HERE = Path(__file__).resolve().parent
PROBE = HERE / "probe.py"
SERVED = HERE / "served.py"
CERT_PART = "certificates"
"""verify's part that asks every public TLS port which certificate it serves (all modes)."""
TESTINFRA = HERE / "testinfra"
OUTSIDE_RCPT = "verify@relay-check.example.net"
PROBE_PARTS = ("delivery", "submission", "port25", "plaintext", "tls", "old_tls_control", "access",
               "sieve", "ldap", "lists", "folders", "shared", "audit", "clients", "path")
FLEET_PARTS = ("lists", "clients", "shared", "audit")
"""Probe parts that ask one host for every account: with several mail hosts they run on the
relay host only (lists reach members elsewhere; shared folders and client settings are refused
there by check)."""


@dataclass
class VerifyReport:
    site: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was deliberately not run, and why (read-only against real servers)."""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> str:
        return json.dumps({"site": self.site, "ok": self.ok, "notes": self.notes,
                           "checks": [asdict(c) for c in self.checks]}, indent=2)

    def table(self) -> str:
        width = max((len(c.name) for c in self.checks), default=10)
        width = min(width, 90)
        lines = [f"{'':4}  {'host':<8}  check"]
        for c in self.checks:
            lines.append(f"{'PASS' if c.ok else 'FAIL'}  {c.host:<8}  {c.name}")
            if not c.ok and c.detail:
                for part in c.detail.splitlines()[:6]:
                    lines.append(f"{'':16}{part}")
        passed = sum(c.ok for c in self.checks)
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"{passed} passed, {len(self.checks) - passed} failed")
        return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """How verify reaches one host: its address, and SSH for the host checks."""

    key: str
    hostname: str
    address: str
    ssh_user: str = "root"
    ssh_key: str | None = None


def host_targets(site_file: str | Path, plan: SitePlan, *, lab: bool, inventory: str | Path | None,
                 build_dir: str | Path, verb: str) -> dict[str, Target]:
    """Where the site's hosts are reached over SSH: the lab's containers or the inventory's
    hosts (``mailstack status``, ``mailstack audit``)."""
    if lab:
        from mailstack import lab as lab_mod

        state = lab_mod.state(site_file, build_dir=build_dir)
        return {h.key: Target(h.key, h.hostname, h.ip, "root", str(state.key))
                for h in state.hosts}
    if inventory:
        return _inventory_targets(plan, Path(inventory))
    raise InputError(f"{verb} needs --lab or -i INVENTORY")


def _inventory_targets(plan: SitePlan, inventory: Path) -> dict[str, Target]:
    try:
        data = yaml.safe_load(inventory.read_text(encoding="utf-8")) or {}
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else 0
        raise InputError(f"{inventory}:{line}: cannot read the inventory: YAML syntax error: "
                         f"{err.problem}") from None
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{inventory}: cannot read the inventory: {err}") from None
    hosts: dict[str, dict[str, Any]] = {}

    def collect(group: dict[str, Any]) -> None:
        for name, hv in (group.get("hosts") or {}).items():
            hosts[name] = {**hosts.get(name, {}), **(hv or {})}
        for child in (group.get("children") or {}).values():
            collect(child or {})

    for group in data.values():
        collect(group or {})
    out = {}
    for key, host in plan.hosts.items():
        hv = hosts.get(key) or hosts.get(host.hostname)
        if hv is None:
            raise InputError(f"{inventory}: no host '{key}' (or {host.hostname}) in the inventory")
        out[key] = Target(key, host.hostname, str(hv.get("ansible_host", host.hostname)),
                          str(hv.get("ansible_user", "root")),
                          hv.get("ansible_ssh_private_key_file"))
    return out


def _secret(site: Site, values: dict[str, str], account_mail: str) -> str:
    account = next(a for a in site.accounts if a.mail == account_mail)
    return values[layout.account_secret(account)]


def probe_job(site: Site, plan: SitePlan, values: dict[str, str], mail_host: str) -> dict:
    """What the network probes of ``mail_host`` need: its accounts (with several mail hosts,
    those homed there), the CA, the LDAP lookups (as that host makes them) as searches."""
    entries = dit.entries(site)
    aliases = dit.alias_targets(site)
    homed = [a for a in site.accounts if not topology.several_homes(site)
             or topology.home(site, a) == mail_host]
    accounts: list[dict[str, Any]] = [
        {"mail": a.mail, "password": _secret(site, values, a.mail),
         "protocols": list(a.protocols), "enabled": a.enabled,
         "aliases": sorted(k for k, v in aliases.items() if a.mail in v and
                           k in {x for acc in site.accounts for x in acc.aliases})}
        for a in homed]
    keys = {"account": homed[0].mail if homed else None,
            "alias": next(iter(aliases), None), "domain": site.domains[0],
            "list": next(iter(dit.group_addresses(site)), None)}
    services = []
    for svc in layout.SERVICE_ACCOUNTS:
        searches = []
        for lookup in dit.lookups(site, mail_host):
            key = keys[lookup.key]
            if lookup.service != svc or key is None:
                continue
            if lookup.service_token:
                # the deny lookup: asked with an account some service is closed to, if any
                key = next((a.mail for a in homed
                            if not a.enabled or dit.disabled_services(a)), key)
            for service in lookup.services or ("",):
                flt = lf.substitute(dit.expand_service(lookup, service), key)
                expect = sorted({v for e in entries if e.dn.is_below(lookup.base)
                                 and lf.matches(flt, e.as_dict())
                                 for a in lookup.returns for v in e.values(a)})
                searches.append([str(lookup.base), lf.render(flt, percent=False),
                                 list(lookup.returns), expect])
        services.append({"name": svc, "dn": str(dit.service_dn(site, svc)),
                         "pw": values[layout.secret_service(svc)], "lookups": searches})
    target = site.verify.probe or (homed[0].mail if homed else None)
    return {
        "hostname": plan.hosts[mail_host].hostname,
        "ca": values[layout.SECRET_CA_CERT],
        "accounts": accounts,
        "outside_rcpt": OUTSIDE_RCPT,
        "send_as": sorted({a.lower() for acc in site.accounts for a in acc.send_as}),
        # addresses a locked-addresses table refuses at RCPT (postfix.table_answer)
        "locked_rcpt": sorted({k for name in postfix.locked_tables(site)
                               for k in [a.mail for a in site.accounts] + list(aliases)
                               if postfix.table_answer(site, name, k)}),
        "domains": list(site.domains),
        # distribution lists: who they reach (each account once) and what outsiders hear
        "lists": [{"address": g.address, "post": g.post,
                   "members": list(dit.group_members(site, g.name)),
                   # Postfix puts "<rcpt>: Recipient address rejected:" before the text
                   "refusal": postfix.LIST_REFUSED.get(g.post, "").removeprefix(
                       "REJECT 5.7.1 ")}
                  for g in site.groups if g.address],
        # the folder tree every login shows, and the rights on the shared folders (folders.py)
        "special_use": folders.special_use_folders(site),
        "shared": folders.account_rights(site),
        "sieve": {"managesieve": site.sieve.managesieve},
        "tls_endpoints": tls_endpoints(site, plan),
        # the client settings the mail host serves (plan/web.py), and every server a client
        # could be told of: the document must name exactly those that answer with TLS
        "clients": {"domains": [d.lower() for d in site.domains],
                    "internal_ca": site.tls.mode == "internal-ca",
                    "candidates": [[s.kind, s.hostname.lower(), s.port, s.socket]
                                   for s in clients.servers(site)]}
        if web.serving_host(site) else None,
        "ldap": {
            "base": site.ldap.base,
            "people": str(dit.ou(site, layout.OU_PEOPLE)),
            "network": slapd.serves_network(site),
            "socket": layout.LDAPI_SOCKET,
            "write_target": str(dit.account_dn(site, target)) if target else None,
            "services": services,
            "users": [{"dn": str(dit.account_dn(site, a["mail"])), "pw": a["password"]}
                      for a in accounts[:2]],
        },
        "path": path_cases(site, values, mail_host),
    }


def path_cases(site: Site, values: dict[str, str], mail_host: str) -> list[dict[str, Any]]:
    """With several mail hosts, run by the relay host's probe: a message handed to each mail
    host for an account homed at each other one (by port 25, from outside), to be found at its
    home once and to have come through the relay (its Received headers' hosts, in order).
    Against real servers only the site's probe account is mailed (``verify.probe``)."""
    relay = topology.relay_host(site)
    if not topology.several_homes(site) or mail_host != relay:
        return []
    readers = [a for a in site.accounts if a.enabled and "imap" in a.protocols
               and (site.verify.probe is None or a.mail.lower() == site.verify.probe.lower())]
    name = {k: site.hosts[k].hostname.lower() for k in site.hosts}
    cases = []
    for home in topology.mail_hosts(site):
        rcpt = next((a for a in readers if topology.home(site, a) == home), None)
        if rcpt is None:
            continue
        for via in topology.mail_hosts(site):
            if via == home:
                continue
            hops = [name[h] for h in dict.fromkeys((via, relay, home))]
            cases.append({"via": name[via], "home": name[home], "rcpt": rcpt.mail,
                          "password": _secret(site, values, rcpt.mail), "hops": hops})
    return cases


def public_ca(site: Site, values: dict[str, str], state: LabState | None) -> str | None:
    """What the public ports' certificates chain to (PEM), or None: the system's CAs.

    The site CA, except in tls.mode acme: there the ACME CA, which in the lab is pebble's
    current root (:func:`mailstack.lab.acme.roots`), and against real servers a public CA of
    the system store; and in files: the admin's ``tls/public/ca.crt`` when he put one there (a
    company's own PKI), else the system store.
    """
    if site.tls.mode == "files":
        return values.get(layout.SECRET_PUBLIC_CA)
    if site.tls.mode != "acme":
        return values[layout.SECRET_CA_CERT]
    if state is None or site.tls.acme is None:
        return None
    from mailstack.lab import acme

    return acme.roots(state.plan, site.tls.acme.server)


TLS_PORTS: dict[int, tuple[str, str]] = {
    layout.SMTP_PORT: ("SMTP", "smtp"), layout.SUBMISSIONS_PORT: ("SMTP", "tls"),
    layout.SUBMISSION_PORT: ("SMTP", "smtp"), layout.IMAPS_PORT: ("IMAP", "tls"),
    layout.IMAP_PORT: ("IMAP", "imap"), layout.POP3S_PORT: ("POP3", "tls"),
    layout.POP3_PORT: ("POP3", "pop3"), layout.MANAGESIEVE_PORT: ("ManageSieve", "sieve"),
    layout.HTTPS_PORT: ("HTTPS", "tls"),
}
"""Each public TLS port: its protocol's name, and how TLS starts there ("tls": from the first
byte; else the protocol whose STARTTLS comes first). The probe (``tls``) and served.py
(``certificates``) both reach the ports as this says."""


def tls_endpoints(site: Site, plan: SitePlan) -> list[list[object]]:
    """[label, host name, port, how TLS starts] of every public TLS port (the probe's job)."""
    return [[f"{TLS_PORTS[p][0]} {p}", plan.hosts[k].hostname, p, TLS_PORTS[p][1]]
            for k, p in public_endpoints(site)]


def public_endpoints(site: Site) -> list[tuple[str, int]]:
    """(host key, port) of every public TLS port: SMTP 25 (STARTTLS), 465 and 587 on an mta
    host; IMAP 143/993, POP3 110/995 and ManageSieve 4190 (when on) on an imap host; HTTPS 443
    on the host that serves client settings."""
    out: list[tuple[str, int]] = []
    for key, host in sorted(site.hosts.items()):
        ports: list[int] = []
        if "mta" in host.roles:
            ports += [layout.SMTP_PORT, layout.SUBMISSIONS_PORT, layout.SUBMISSION_PORT]
        if "imap" in host.roles:
            ports += [layout.IMAPS_PORT, layout.IMAP_PORT, layout.POP3S_PORT, layout.POP3_PORT]
            ports += [layout.MANAGESIEVE_PORT] if site.sieve.managesieve else []
        ports += [layout.HTTPS_PORT] if web.serving_host(site) == key else []
        out += [(key, p) for p in ports]
    return out


def served_checks(site: Site, plan: SitePlan, targets: dict[str, Target], ca: str | None,
                  client: str | None, *, lab: bool) -> list[Check]:
    """One check per host: every public port serves one and the same certificate, which
    chains to ``ca`` (None: the system's CAs) and names the host. A daemon that was not
    reloaded after a renewal (certbot's deploy hook) still serves the old one: FAIL."""
    endpoints = public_endpoints(site)
    job: dict[str, object] = {"ca": ca, "endpoints": [
        [plan.hosts[k].hostname, p, TLS_PORTS[p][1]] for k, p in endpoints]}
    if not lab:
        job["addresses"] = {plan.hosts[k].hostname: targets[k].address for k, _ in endpoints}
    served = _run_script(SERVED, job, client, timeout=300, what="the certificate probe")
    anchor = "the ACME CA" if site.tls.mode == "acme" else (
        "the site CA" if ca else "the system's CAs")
    out = []
    for key in sorted({k for k, _ in endpoints}):
        name = plan.hosts[key].hostname
        got = {p: served[f"{name}:{p}"] for k, p in endpoints if k == key}
        serials = {r["serial"] for r in got.values() if "serial" in r}
        errors = [f"{p}: {r['error']}" for p, r in got.items() if "error" in r]
        ok = not errors and len(serials) == 1
        detail = "; ".join(errors) if errors else ", ".join(
            f"{p}: {r['serial']}" for p, r in got.items())
        serial = f" (serial {next(iter(serials))})" if ok else ""
        out.append(Check(f"{CERT_PART}: every public TLS port of {name} serves one certificate "
                         f"that chains to {anchor} and names the host{serial}", key, ok,
                         "" if ok else detail))
    return out


def audit_job(site: Site, job: dict) -> dict | None:
    """Which account deletes which message for the audit check: the probe account on real
    servers, the first account that may use IMAP in the lab."""
    allowed = job.get("write_accounts")
    acc = next((a for a in job["accounts"] if (allowed is None or a["mail"] in allowed)
                and a["enabled"] and "imap" in a["protocols"]), None)
    if acc is None:
        return None
    import uuid

    return {"user": acc["mail"].lower(), "folder": "INBOX",
            "msgid": f"<audit.{uuid.uuid4().hex}@{site.domains[0]}>"}


def audit_check(target: Target, job: dict, *, lab: bool) -> Check:
    """The host's journal holds the delete and the expunge of the probe's message, naming the
    user, the folder and the Message-ID (what `mailstack audit` shows)."""
    import time

    from mailstack import audit

    name = (f"audit: deleting a message is logged with user, folder and Message-ID "
            f"({job['user']})")
    want = {"delete", "expunge"}
    seen: set[str] = set()
    deadline = time.monotonic() + 10
    while True:
        try:
            found = audit.read(target, job["user"], "-1h", lab=lab)
        except MailstackError as err:
            return Check(name, target.key, False, str(err))
        seen = {e.event for e in found if e.msgid == job["msgid"] and e.folder == job["folder"]}
        if want <= seen or time.monotonic() > deadline:
            break
        time.sleep(1)
    return Check(name, target.key, want <= seen,
                 f"no {' and no '.join(sorted(want - seen))} line for {job['msgid']} in "
                 f"{job['folder']} of {job['user']} in the journal (journalctl -t dovecot): "
                 "is mail_log in mail_plugins?")


def _run_script(script: Path, job: dict, client: str | None, *, timeout: float,
                what: str) -> Any:
    """Run a stand-alone probe script (``probe.py``, ``served.py``) in the lab's client
    container, or here: the job as JSON on stdin, its JSON answer from stdout."""
    payload = json.dumps(job)
    if client:
        from mailstack.container import Container

        box = Container(client)
        where = f"/root/mailstack-{script.name}"
        box.put_file(where, script.read_text(encoding="utf-8"), 0o600)
        proc = box.exec(["python3", where], input=payload, timeout=timeout)
    else:
        proc = subprocess.run([sys.executable, str(script)], input=payload, text=True,
                              capture_output=True, timeout=timeout, check=False)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise ToolError(f"{what} failed (exit {proc.returncode}): "
                        f"{(proc.stderr or proc.stdout)[-2000:]}") from None


def _run_probe(job: dict, client: str | None) -> list[dict]:
    """Run the probe script in the lab's client container, or here."""
    return list(_run_script(PROBE, job, client, timeout=600, what="the probe"))


def _run_on_host(target: Target, job: dict) -> list[dict]:
    """Run the probe on a site host over SSH (``ldap_local``: the directory over its ldapi
    socket, as root for the control and the write check). Script and job travel on stdin, so
    no secret is on a command line or in a file on the host."""
    bootstrap = ("import sys; job = sys.stdin.readline(); g = {'__name__': 'mailstack_probe'}; "
                 "exec(compile(sys.stdin.read(), 'mailstack-probe.py', 'exec'), g); "
                 "sys.exit(g['run_job'](job))")
    sudo = [] if target.ssh_user == "root" else ["sudo", "-n"]
    with tempfile.TemporaryDirectory(prefix="mailstack-verify-") as tmp:
        cmd = ["ssh", "-F", str(_ssh_config(Path(tmp), target)),
               f"{target.ssh_user}@{target.address}", shlex.join([*sudo, "python3", "-c",
                                                                  bootstrap])]
        payload = json.dumps(job) + "\n" + PROBE.read_text(encoding="utf-8")
        try:
            proc = subprocess.run(cmd, input=payload, text=True, capture_output=True,
                                  timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return [{"name": f"probe on {target.key}", "ok": False,
                     "detail": "no answer over SSH within 300 s"}]
    try:
        return list(json.loads(proc.stdout))
    except json.JSONDecodeError:
        lines = [x for x in (proc.stderr or proc.stdout).splitlines() if x.strip()]
        return [{"name": f"probe on {target.key}", "ok": False,
                 "detail": f"the probe did not run over SSH (exit {proc.returncode}): "
                           + " / ".join(lines[-3:])}]


def context_csn(target: Target, base: str) -> str:
    """The contextCSN of the host's directory (its root reads it over ldapi), or ""."""
    got = _run_on_host(target, {"hostname": target.hostname, "ca": "", "parts": ["context"],
                                "ldap": {"socket": layout.LDAPI_SOCKET, "base": base}})
    return next((str(r.get("csn", "")) for r in got if r.get("ok")), "")


def replica_checks(site: Site, targets: dict[str, Target], seconds: float = 10) -> list[Check]:
    """Each replica holds the provider's tree: its contextCSN reaches the provider's (read
    first) within ``seconds`` (a change takes about 0.1 s)."""
    import time

    provider = topology.provider(site)
    want = context_csn(targets[provider], site.ldap.base)
    out = []
    for replica in topology.replicas(site):
        deadline = time.monotonic() + seconds
        got = context_csn(targets[replica], site.ldap.base)
        while (not want or got < want) and time.monotonic() < deadline:
            time.sleep(1)
            got = context_csn(targets[replica], site.ldap.base)
        out.append(Check(f"the replica holds the provider's tree (contextCSN {want or 'none'})",
                         replica, bool(want) and got >= want,
                         f"the provider ({provider}) is at {want or 'nothing'}, the replica at "
                         f"{got or 'nothing'} after {seconds:.0f} s"))
    return out


def _host_checks(target: Target, manifest: Path, keyword: str | None = None) -> list[Check]:
    """Run the testinfra tests against one host over SSH; one Check per test (``keyword``:
    only the tests pytest's ``-k`` selects, for a test of one feature)."""
    with tempfile.TemporaryDirectory(prefix="mailstack-verify-") as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", str(TESTINFRA), "-q", "-p", "no:cacheprovider",
               "-c", os.devnull, "--rootdir", str(TESTINFRA), f"--junitxml={junit}",
               "-o", "junit_family=xunit1",  # keeps record_property's notes
               f"--hosts=ssh://{target.ssh_user}@{target.address}",
               "--ssh-config", str(_ssh_config(Path(tmp), target)),
               *(["-k", keyword] if keyword else [])]
        env = {**os.environ, "MAILSTACK_MANIFEST": str(manifest), "MAILSTACK_HOST": target.key}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900,
                              check=False)
        if not junit.exists():
            # a part that cannot run is a failed check in the table and the JSON, never silence
            lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
            return [Check("host: the host checks ran (testinfra)", target.key, False,
                          "testinfra did not run: " + " / ".join(lines[-3:]))]
        return _junit_checks(junit, target.key)


def _ssh_config(where: Path, target: Target) -> Path:
    lines = [f"Host {target.address}", "  StrictHostKeyChecking no",
             "  UserKnownHostsFile /dev/null", "  LogLevel ERROR", "  BatchMode yes",
             "  ConnectTimeout 10"]
    if target.ssh_key:
        lines.append(f"  IdentityFile {target.ssh_key}")
    path = where / "ssh_config"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _junit_checks(junit: Path, host: str) -> list[Check]:
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        raw = case.get("name", "")
        base, _, param = raw.partition("[")
        name = base.removeprefix("test_").replace("_", " ")
        param = param.rstrip("]")
        param = "" if param.startswith("ssh://") else param.rsplit("-ssh://", 1)[0]
        if param:
            name = f"{name}: {param}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if case.find("skipped") is not None:
            continue
        detail = "; ".join(p.get("value", "") for p in case.iter("property")
                           if p.get("name") == "note")
        if problem is not None:
            message = problem.get("message", "") or (problem.text or "")
            detail = message.split("\nassert")[0].strip()
        out.append(Check(f"host: {name}", host, problem is None, detail))
    return out


def verify(site_file: str | Path, *, lab: bool = False, inventory: str | Path | None = None,
           build_dir: str | Path = "build", secrets_dir: str | Path | None = None,
           host_checks: bool = True, parts: list[str] | None = None,
           allow_writes: bool = False, host_keyword: str | None = None) -> VerifyReport:
    """Prove the live site: network probes from a client, then each host's own checks.

    ``parts`` limits the checks to some of PROBE_PARTS and of ``hops.PARTS`` (the lab-only
    checks of routes, credentials, certificates and remote mailboxes; "outside" is all of them).
    Tests of one feature use it, and ``host_keyword`` (pytest's ``-k`` expression) to run only
    the host checks that feature has.

    Against real servers (``inventory``) verify only reads: no mail to the accounts, no message
    submitted, no write to the directory, unless ``allow_writes``. The lab always runs them all.
    """
    from mailstack import secrets as secrets_mod

    site, plan = core.plan(site_file, secrets_dir=secrets_dir)
    store = secrets_mod.SecretStore(secrets_dir or secrets_mod.default_dir(site_file))
    values = {r.name: store.read(r.name) for r in secrets_mod.required(site)}
    if site.tls.mode == "files" and store.exists(layout.SECRET_PUBLIC_CA):
        values[layout.SECRET_PUBLIC_CA] = store.read(layout.SECRET_PUBLIC_CA)
    out = core.render(site_file, build_dir, secrets_dir=secrets_dir)
    manifest = out / "manifest.json"
    client = state = None
    if lab:
        from mailstack import lab as lab_mod

        state = lab_mod.state(site_file, build_dir=build_dir)
        targets = {h.key: Target(h.key, h.hostname, h.ip, "root", str(state.key))
                   for h in state.hosts}
        client = state.client.name
    elif inventory:
        targets = _inventory_targets(plan, Path(inventory))
    else:
        raise InputError("verify needs --lab or -i INVENTORY")
    # with several mail hosts each is probed with the accounts homed there; the parts that ask
    # one host for every account run on the relay host (FLEET_PARTS)
    mail_hosts = topology.mail_hosts(site)
    several = topology.several_homes(site)
    first = topology.relay_host(site) if several else mail_hosts[0]
    assert first is not None
    report = VerifyReport(site.site)
    jobs = {}
    for mail_host in [first, *(h for h in mail_hosts if h != first)]:
        job = probe_job(site, plan, values, mail_host)
        # the site CA signs the internal hops (LDAP); the public ports may serve another CA's
        job["site_ca"], job["ca"] = job["ca"], public_ca(site, values, state)
        job["parts"] = [p for p in (parts or PROBE_PARTS) if p in PROBE_PARTS
                        and (mail_host == first or p not in FLEET_PARTS)]
        job["writes"] = lab or allow_writes
        if not lab:
            job["address"] = targets[mail_host].address  # the inventory's address for the name
            serving = web.serving_host(site)
            pins = {name: targets[serving].address for name in web.client_names(site)} \
                if serving else {}
            # the site path's hosts, by the inventory's addresses
            pins.update({site.hosts[k].hostname: targets[k].address for k in mail_hosts})
            if pins:
                job["pins"] = pins
            if allow_writes:
                if site.verify.probe is None:
                    raise InputError("--allow-writes needs the site's probe account: add "
                                     "`verify: {probe: ADDRESS}` with an account kept for "
                                     "verify (apply creates it like any account)")
                # real users are never mailed and their entries never written
                job["write_accounts"] = [site.verify.probe]
                job["cleanup"] = True
            else:
                job["ldap"]["write_target"] = None
        if "audit" in job["parts"] and job["writes"]:
            job["audit"] = audit_job(site, job)
        jobs[mail_host] = job
    if not lab and not allow_writes:
        report.notes.append(
            "read-only against real servers: delivery, sending on 587/465, the Sieve rule upload, "
            "the audit trail and the LDAP write checks were not run (--allow-writes runs them "
            "with the site's probe account only, and removes what they wrote)")
    if several:
        report.notes.append("several mail hosts: distribution lists and the audit trail are "
                            f"probed at the relay host ({first}) only")
    for host, job in jobs.items():
        for r in _run_probe(job, client):
            report.checks.append(Check(r["name"], host, r["ok"], r["detail"]))
    mail_host, job = first, jobs[first]
    if several and (parts is None or "ldap" in parts):
        report.checks += replica_checks(site, targets)
    if parts is None or CERT_PART in parts:
        report.checks += served_checks(site, plan, targets, job["ca"], client, lab=lab)
    if job.get("audit"):
        report.checks.append(audit_check(targets[mail_host], job["audit"], lab=lab))
    if "ldap" in job["parts"]:
        ldap_host = topology.provider(site)
        local = {**job, "parts": ["ldap_local"], "address": "", "cleanup": False}
        for r in _run_on_host(targets[ldap_host], local):
            report.checks.append(Check(r["name"], ldap_host, r["ok"], r["detail"]))
    if lab:
        from mailstack.verify import hops

        wanted = hops.PARTS if parts is None or "outside" in parts else tuple(
            p for p in hops.PARTS if p in parts)
        hops.run(site, site_file, build_dir, values,
                    lambda name, ok, detail: report.checks.append(
                        Check(name, mail_host, ok, detail)), wanted)
    if host_checks:
        for key in sorted(targets):
            checks = _host_checks(targets[key], manifest, keyword=host_keyword)
            report.checks += checks
            # a passing host check may still have something to say (testinfra's record_property
            # "note"), e.g. accounts the directory has and a directory-mode site does not name
            report.notes += [f"{c.host}: {c.detail}" for c in checks if c.ok and c.detail]
    return report
