"""`mailstack user`: the site's accounts on the live directory, for years after the first apply.

Each verb is a function here; ``cli.py`` only parses and prints. They reach the directory the
way apply and verify do: SSH to the host with the ldap role, then ldapi as root (SASL
EXTERNAL); ``users_host.py`` and one JSON job travel on SSH's stdin, so no password is on a
command line or in a file on a host. ``passwd --self`` binds as the user over StartTLS to the
directory's network listener instead, verifying the server against the site CA.

Where the site file owns the accounts (``ldap.accounts: site``, the default) add, lock,
unlock and remove edit ``site.yml`` too (``site/edit.py``: comments, order and layout kept),
and add writes the initial secret as ``mailstack secrets`` would; the edited site is checked
first, and written only once the directory took the change. Bad input, a directory that is
down, an unreachable host: one line, and nothing is changed. After a password change, lock,
unlock or removal, every Dovecot host flushes that user from its auth cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailstack import checks, core, secrets
from mailstack.errors import InputError, ToolError
from mailstack.findings import raise_errors
from mailstack.ldap import filter as lf
from mailstack.plan import SitePlan, dit, layout, slapd
from mailstack.site import edit
from mailstack.site.load import load_site
from mailstack.site.model import Account, Site
from mailstack.site.sizes import SizeError, parse_size

HOST_SCRIPT = Path(__file__).resolve().parent / "users_host.py"
BOOTSTRAP = ("import sys; job = sys.stdin.readline(); g = {'__name__': 'mailstack_users_host'}; "
             "exec(compile(sys.stdin.read(), 'mailstack-users.py', 'exec'), g); "
             "sys.exit(g['run_job'](job))")
SSH_TIMEOUT = 120
PasswordSource = Callable[[], str]


@dataclass
class Result:
    """What a verb did, as lines for the admin (never a password), and warnings."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Where:
    """How the user commands reach the site: ``--lab`` or ``-i INVENTORY``."""

    lab: bool = False
    inventory: str | Path | None = None
    build_dir: str | Path = "build"
    secrets_dir: str | Path | None = None


class _Live:
    """The site, its plan and its hosts, reached over SSH."""

    def __init__(self, site_file: str | Path, where: Where) -> None:
        from mailstack.verify import Target, _inventory_targets

        self.site_file = Path(site_file)
        self.where = where
        self.csn = ""
        self.site, self.plan = core.plan(site_file, secrets_dir=where.secrets_dir)
        self.store = secrets.SecretStore(where.secrets_dir or secrets.default_dir(site_file))
        if where.lab:
            from mailstack import lab as lab_mod

            state = lab_mod.state(site_file, build_dir=where.build_dir)
            self.targets = {h.key: Target(h.key, h.hostname, h.ip, "root", str(state.key))
                            for h in state.hosts}
        elif where.inventory:
            self.targets = _inventory_targets(self.plan, Path(where.inventory))
        else:
            raise InputError("the user commands need --lab or -i INVENTORY")

    def hosts(self, role: str) -> list[str]:
        return sorted(k for k, h in self.plan.hosts.items() if role in h.roles)

    @property
    def directory(self) -> str:
        return self.hosts("ldap")[0]

    def run(self, key: str, job: dict[str, Any]) -> dict[str, Any]:
        """Run ``users_host.py`` with ``job`` on host ``key``; its JSON answer."""
        target = self.targets[key]
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
        if self.where.lab:
            argv += ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null"]
        if target.ssh_key:
            argv += ["-i", str(target.ssh_key), "-o", "IdentitiesOnly=yes"]
        remote = shlex.join(["python3", "-c", BOOTSTRAP])
        if target.ssh_user != "root":
            remote = "sudo -n " + remote
        argv += [f"{target.ssh_user}@{target.address}", remote]
        payload = json.dumps(job) + "\n" + HOST_SCRIPT.read_text(encoding="utf-8")
        where = f"{key} ({target.address})"
        try:
            proc = subprocess.run(argv, input=payload, capture_output=True, text=True,
                                  timeout=SSH_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise ToolError(f"{where}: no answer over SSH within {SSH_TIMEOUT} s; whether "
                            "the change was made, `mailstack user show` tells") from None
        except OSError as err:
            raise ToolError(f"{where}: ssh failed: {err}") from None
        try:
            return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
        except (json.JSONDecodeError, IndexError):
            lines = [x for x in (proc.stderr or proc.stdout).splitlines() if x.strip()]
            why = lines[-1] if lines else f"exit {proc.returncode}"
            if proc.returncode == 255:
                raise ToolError(f"{where}: cannot reach the host over SSH: {why}") from None
            raise ToolError(f"{where}: the user command did not run there: {why}") from None

    def directory_job(self, op: str, mail: str | None = None, flush: bool = False,
                      **job: Any) -> dict[str, Any]:
        """``op`` on the directory as root; one line and nothing changed when it fails. With
        ``flush``, the directory's host flushes ``mail`` from Dovecot's cache too if it runs
        Dovecot (the other Dovecot hosts: :meth:`flush`)."""
        key = self.directory
        job = {"op": op, "socket": layout.LDAPI_SOCKET, "base": self.site.ldap.base, **job}
        if mail is not None:
            job.setdefault("dn", str(dit.account_dn(self.site, mail)))
        if flush and mail and key in self.hosts("imap"):
            job["flush"] = [mail]
        answer = self.run(key, job)
        if answer.get("ok"):
            # where the provider's tree stands after the change: a host with a replica waits
            # for it before it flushes its cache (users_host.caught_up)
            self.csn = str(answer.get("csn") or "")
            return answer
        kind, message = answer.get("error"), answer.get("message", "")
        where = f"{key} ({self.targets[key].address})"
        unchanged = "" if op in ("list", "show") else "; nothing was changed"
        if kind == "down":
            raise ToolError(f"{where}: the directory does not answer on {layout.LDAPI_SOCKET} "
                            f"(is slapd running? `systemctl status slapd` there){unchanged}")
        if kind == "unknown":
            raise InputError(f"{mail}: no such account in the directory ({job.get('dn')})")
        if kind == "exists":
            raise InputError(f"{mail}: exists already in the directory ({job.get('dn')})"
                             f"{unchanged}")
        if kind == "refused":
            raise InputError(f"{mail}: {message}{unchanged}")
        raise ToolError(f"{where}: {message}{unchanged}")

    def flush(self, mail: str, result: Result, done: str | None = None) -> None:
        """Every Dovecot host forgets ``mail``'s cached logins (``done``: the host whose
        directory job flushed already)."""
        for key in self.hosts("imap"):
            if key == done:
                continue
            try:
                answer = self.run(key, {"op": "flush", "flush": [mail],
                                        "socket": layout.LDAPI_SOCKET,
                                        "base": self.site.ldap.base,
                                        "after_csn": self.csn})
                problem = answer.get("flush_error") or ""
            except ToolError as err:
                problem = str(err)
            if problem:
                result.warnings.append(f"{key}: {problem}; Dovecot may accept the old state "
                                       "of this account until its cache entry expires")

    def after(self, mail: str, answer: dict[str, Any], result: Result) -> None:
        done = self.directory if "flush_error" in answer else None
        if answer.get("flush_error"):
            result.warnings.append(f"{self.directory}: {answer['flush_error']}; Dovecot may "
                                   "accept the old state of this account until its cache "
                                   "entry expires")
        self.flush(mail, result, done)

    # -- the site file ------------------------------------------------------------------
    @property
    def site_owned(self) -> bool:
        return self.site.ldap.accounts == "site"

    def text(self) -> str:
        return self.site_file.read_text(encoding="utf-8")

    def checked(self, text: str, extra: dict[str, str] | None = None) -> Site:
        """The site ``text`` would be, checked (with ``extra`` secrets as if written);
        InputError with check's lines (naming the real file) when it has errors."""
        with tempfile.TemporaryDirectory(prefix="mailstack-user-") as tmp:
            candidate = Path(tmp) / self.site_file.name
            candidate.write_text(text, encoding="utf-8")
            try:
                site = load_site(candidate)
                raise_errors(checks.run(site, _Overlay(self.store.root, extra or {})))
            except InputError as err:
                raise InputError(str(err).replace(str(candidate), str(self.site_file))) \
                    from None
            return site

    def write_site(self, text: str) -> None:
        mode = self.site_file.stat().st_mode & 0o7777 if self.site_file.exists() else 0o644
        secrets.replace_file(self.site_file, text.encode("utf-8"), mode)


class _Overlay(secrets.SecretStore):
    """The secrets folder plus secrets not written yet (a new account's initial password)."""

    def __init__(self, root: str | Path, extra: dict[str, str]) -> None:
        super().__init__(root)
        self.extra = extra

    def exists(self, name: str) -> bool:
        return name in self.extra or super().exists(name)

    def read(self, name: str) -> str:
        return self.extra[name] if name in self.extra else super().read(name)


def check_password(site: Site, password: str) -> str:
    """The password as slapd will get it, or InputError (nothing is sent)."""
    if not password:
        raise InputError("the password is empty; nothing was changed")
    if any(c in password for c in "\r\n\x00"):
        raise InputError("the password holds a line break or NUL; nothing was changed")
    least = site.ldap.password_policy.min_length
    if len(password) < least:
        raise InputError(f"the password is shorter than {least} characters "
                         "(ldap.password_policy.min_length); nothing was changed")
    return password


def _account(site: Site, mail: str) -> Account | None:
    return next((a for a in site.accounts if a.mail.lower() == mail.lower()), None)


def _state(entry: dict[str, Any]) -> dict[str, str]:
    locked = [v.upper() for v in entry.get(dit.LOCKED, [])] == ["TRUE"]
    disabled = sorted(entry.get(dit.DISABLED_SERVICE, []))
    quota = entry.get(dit.QUOTA) or []
    return {
        "mail": (entry.get("mail") or ["?"])[0],
        "state": "locked" if locked else "active",
        "disabled": ",".join(disabled) or "-",
        "quota": _size(int(quota[0])) if quota and quota[0].isdigit() else "none",
        "origin": (entry.get(dit.ORIGIN) or ["-"])[0],
        "password": entry.get("password", "none"),
    }


def _size(n: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


# -- the verbs -------------------------------------------------------------------------------

def add(site_file: str | Path, mail: str, name: str, password: PasswordSource, *,
        protocols: list[str] | None = None, quota: str | None = None,
        mailhost: str | None = None, where: Where = Where()) -> Result:
    """A new account: checked into the site file (site mode), added live with the placeholder,
    its password set by RFC 3062, its initial secret written 0600 beside the others. With
    several mail hosts ``mailhost`` names its home (the directory's provider takes the entry;
    the replicas have it within a second)."""
    live = _Live(site_file, where)
    account: dict[str, Any] = {"mail": mail, "name": name}
    if mailhost is not None:
        account["mailhost"] = mailhost
    if protocols is not None:
        account["protocols"] = protocols
    if quota is not None:
        account["quota"] = quota
    text = live.text()
    if _account(live.site, mail) is not None:
        raise InputError(f"{mail}: is already an account of {site_file}; nothing was changed")
    edited = edit.add_account(text, account, str(site_file))
    secret = layout.secret_account(mail)
    if live.site_owned and live.store.exists(secret):
        raise InputError(f"{live.store.path(secret)}: exists already (left by an earlier "
                         f"account {mail}?); remove it first; nothing was changed")
    # the site as it would be: every mistake is check's one line, before the prompt
    site = live.checked(edited, {secret: "placeholder-for-check"})
    new = _account(site, mail)
    assert new is not None
    pw = check_password(site, password())
    live.checked(edited, {secret: pw})
    entry = dit.account_entry(site, new, dit.ORIGIN_CLI)
    answer = live.directory_job("add", mail, entry=[list(p) for p in entry.attrs],
                                password=pw)
    result = Result([f"{mail}: added to the directory ({entry.dn}); its password is set"])
    if live.site_owned:
        secrets.write_new(live.store.path(secret), pw)
        live.write_site(edited)
        result.lines.append(f"{site_file}: {mail} added to accounts:")
        result.lines.append(f"{live.store.path(secret)}: its initial password (0600)")
    state = _state(answer.get("entry") or {})
    result.lines.append(f"{mail}: services {', '.join(new.protocols)}; quota {state['quota']}")
    return result


def passwd(site_file: str | Path, mail: str, password: PasswordSource, *,
           where: Where = Where()) -> Result:
    """The admin sets a new password (RFC 3062 as root); Dovecot's caches forget the old."""
    live = _Live(site_file, where)
    pw = check_password(live.site, password())
    answer = live.directory_job("passwd", mail, flush=True, password=pw)
    result = Result([f"{mail}: password changed"])
    live.after(mail, answer, result)
    return result


def self_service_target(site_file: str | Path, where: Where = Where()
                        ) -> tuple[Site, str, str, str]:
    """Where ``passwd --self`` binds: (site, directory host name, address, site CA), or one
    line when the directory has no network listener (asked before any password is)."""
    site, plan = core.plan(site_file, secrets_dir=where.secrets_dir)
    if not slapd.serves_network(site):
        raise InputError(f"{site_file}: the directory listens only on its host's own socket "
                         "(ldapi); `passwd --self` needs `ldap: {network: true}` (port 389, "
                         "StartTLS required); an admin can run `mailstack user passwd` instead")
    key = next(k for k, h in plan.hosts.items() if "ldap" in h.roles)
    store = secrets.SecretStore(where.secrets_dir or secrets.default_dir(site_file))
    address = _address(site_file, plan, key, where)
    return site, plan.hosts[key].hostname, address, store.read(layout.SECRET_CA_CERT)


def _address(site_file: str | Path, plan: SitePlan, key: str, where: Where) -> str:
    from mailstack.verify import _inventory_targets

    if where.lab:
        from mailstack import lab as lab_mod

        return lab_mod.state(site_file, build_dir=where.build_dir).host(key).ip
    if where.inventory:
        return _inventory_targets(plan, Path(where.inventory))[key].address
    raise InputError("the user commands need --lab or -i INVENTORY")


def passwd_self(site_file: str | Path, mail: str, old: PasswordSource, new: PasswordSource,
                *, where: Where = Where(), flush: bool = True) -> Result:
    """The user changes his own password: a bind as himself with the old one over StartTLS
    (the server checked against the site CA), then RFC 3062 with old and new."""
    import ssl

    import ldap3
    from ldap3.core.exceptions import LDAPException

    site, hostname, address, ca = self_service_target(site_file, where)
    dn = str(dit.account_dn(site, mail))
    old_pw = old()
    new_pw = check_password(site, new())
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_data=ca, valid_names=[hostname],
                    version=ssl.PROTOCOL_TLS_CLIENT)
    # get_info=NONE: ldap3 otherwise reads the root DSE on open(), and slapd, still counting
    # that search, refused the StartTLS sent on its heels ("cannot start TLS when operations
    # are outstanding", 2 connections in 20 in the lab)
    server = ldap3.Server(address, port=layout.LDAP_PORT, tls=tls, connect_timeout=10,
                          get_info=ldap3.NONE)
    conn = ldap3.Connection(server, user=dn, password=old_pw, receive_timeout=30,
                            raise_exceptions=False)
    there = f"the directory at {hostname} ({address}:{layout.LDAP_PORT})"
    try:
        conn.open()
        if not conn.start_tls(read_server_info=False):
            raise ToolError(f"{there}: StartTLS failed: {conn.last_error or conn.result}; "
                            "nothing was changed")
        if not conn.bind():
            if (conn.result or {}).get("result") == 49:
                raise InputError(f"{mail}: the old password is wrong (or there is no such "
                                 "account); nothing was changed")
            raise ToolError(f"{there}: the bind as {mail} failed: "
                            f"{conn.result.get('description')} {conn.result.get('message')}")
        conn.extend.standard.modify_password(dn, old_pw, new_pw)
        res = conn.result or {}
        if res.get("result") not in (0, None):
            raise InputError(f"{mail}: the directory refused the new password: "
                             f"{res.get('description')}: {res.get('message')}; nothing was "
                             "changed")
    except (LDAPException, OSError) as err:  # ssl.SSLError is an OSError
        raise ToolError(f"{there}: {_why(err)}; nothing was changed") from None
    finally:
        with contextlib.suppress(LDAPException, OSError):  # a failed TLS closed the socket
            conn.unbind()
    result = Result([f"{mail}: password changed"])
    if flush:
        try:
            live = _Live(site_file, where)
            live.flush(mail, result)
        except ToolError as err:
            result.warnings.append(f"{err}; Dovecot may accept the old password until its "
                                   "cache entry expires")
    return result


def _why(err: Exception) -> str:
    text = str(err)
    if "refused" in text.lower():
        return "connection refused (is slapd running and listening on the network?)"
    if "certificate" in text.lower() or "ssl" in text.lower():
        return f"TLS failed: the server is not the one the site CA certified ({text})"
    return f"{type(err).__name__}: {text}"


def set_locked(site_file: str | Path, mail: str, locked: bool, *,
               where: Where = Where()) -> Result:
    """lock / unlock: ``enabled: false`` in the site file (site mode) and ``mailstackLocked``
    in the directory; Dovecot's caches forget the account."""
    live = _Live(site_file, where)
    edited = None
    if live.site_owned:
        if _account(live.site, mail) is None:
            raise InputError(f"{mail}: not an account of {site_file} (the site file owns the "
                             "accounts: ldap.accounts is site); nothing was changed")
        edited = edit.set_enabled(live.text(), mail, not locked, str(site_file))
        live.checked(edited)
    answer = live.directory_job("lock", mail, flush=True, locked=locked)
    verb = "locked" if locked else "unlocked"
    how = ("every login is refused; mail to it is "
           + ("refused (5.2.1)" if live.site.ldap.locked_mail == "refuse" else "still accepted")
           if locked else "it may log in again")
    result = Result([f"{mail}: {verb} ({how})" if answer.get("changed") else
                     f"{mail}: was {verb} already in the directory"])
    if edited is not None and edited != live.text():
        live.write_site(edited)
        result.lines.append(f"{site_file}: {mail} " +
                            ("enabled: false" if locked else "enabled again"))
    live.after(mail, answer, result)
    return result


_DEFAULT_PROTOCOLS = next(f.default for f in dataclasses.fields(Account) if f.name == "protocols")


def set_account(site_file: str | Path, mail: str, *, protocols: list[str] | None = None,
                quota: str | None = None, where: Where = Where()) -> Result:
    """Change an account's services or quota: in the site file (site mode) and the
    directory; Dovecot's caches forget the account. ``quota="none"``: the site's default
    (site mode), no limit (directory mode)."""
    if protocols is None and quota is None:
        raise InputError("nothing to change: give --protocols, --quota or both")
    live = _Live(site_file, where)
    replace: dict[str, list[str]] = {}
    edited = None
    unset = quota is not None and quota.strip().lower() == "none"
    if live.site_owned:
        if _account(live.site, mail) is None:
            raise InputError(f"{mail}: not an account of {site_file} (the site file owns the "
                             "accounts: ldap.accounts is site); nothing was changed")
        values: dict[str, Any] = {}
        if protocols is not None:
            values["protocols"] = (None if tuple(protocols) == _DEFAULT_PROTOCOLS
                                   else protocols)
        if quota is not None:
            values["quota"] = None if unset else quota
        edited = edit.set_keys(live.text(), mail, values, str(site_file))
        site = live.checked(edited)
        account = _account(site, mail)
        assert account is not None
        entry = dit.account_entry(site, account, dit.ORIGIN_SITE)
        for attr, given in ((dit.DISABLED_SERVICE, protocols), (dit.QUOTA, quota)):
            if given is not None:
                replace[attr] = entry.values(attr)
    else:
        if protocols is not None:
            unknown = [p for p in protocols if p not in dit.DOVECOT_SERVICE]
            if unknown:
                raise InputError(f"--protocols: '{unknown[0]}' is not one of "
                                 f"{', '.join(dit.DOVECOT_SERVICE)}; nothing was changed")
            replace[dit.DISABLED_SERVICE] = [v for k, v in dit.DOVECOT_SERVICE.items()
                                             if k not in protocols]
        if quota is not None:
            try:
                replace[dit.QUOTA] = [] if unset else [str(parse_size(quota))]
            except SizeError as err:
                raise InputError(f"--quota: {err}; nothing was changed") from None
    answer = live.directory_job("set", mail, flush=True, replace=replace)
    state = _state(answer.get("entry") or {})
    result = Result([f"{mail}: " + ("changed" if answer.get("changed") else "unchanged")
                     + f" in the directory: disabled services {state['disabled']}; "
                       f"quota {state['quota']}"])
    if edited is not None and edited != live.text():
        live.write_site(edited)
        result.lines.append(f"{site_file}: {mail} changed")
    live.after(mail, answer, result)
    return result


def remove(site_file: str | Path, mail: str, *, prune: bool = False,
           where: Where = Where()) -> Result:
    """Out of the site file (site mode); in the directory locked (kept), or with ``prune``
    deleted. The mailbox stays on the mail host either way."""
    live = _Live(site_file, where)
    edited = None
    if live.site_owned and _account(live.site, mail) is not None:
        # (an entry the site file no longer names is locked or deleted in the directory only)
        edited = edit.remove_account(live.text(), mail, str(site_file))
        live.checked(edited)
    if prune:
        answer = live.directory_job("delete", mail, flush=True)
        lines = [f"{mail}: entry deleted from the directory"]
    else:
        answer = live.directory_job("lock", mail, flush=True, locked=True)
        lines = [f"{mail}: locked in the directory (entry kept; --prune deletes it)"]
    home = dit.mail_home(mail)
    mail_hosts = ", ".join(live.hosts("imap"))
    lines.append(f"{mail}: the mailbox stays at {mail_hosts}:{home} (apply --prune moves it "
                 "to a dated archive folder)")
    if edited is not None:
        account = _account(live.site, mail)
        assert account is not None
        secret = layout.account_secret(account)
        live.write_site(edited)
        lines.append(f"{site_file}: {mail} removed from accounts:")
        left = live.checked(edited)
        if secret not in {r.name for r in secrets.required(left)} and live.store.exists(secret):
            live.store.path(secret).unlink()  # its initial password: the site needs it no more
            lines.append(f"{live.store.path(secret)}: removed (the site needs it no more)")
    result = Result(lines)
    live.after(mail, answer, result)
    return result


def listing(site_file: str | Path, *, where: Where = Where()) -> list[dict[str, str]]:
    """The directory's accounts with their state: locked, disabled services, quota, origin."""
    live = _Live(site_file, where)
    flt = lf.render(lf.Eq("objectClass", dit.profile(live.site).account_class), percent=False)
    answer = live.directory_job("list", people=str(dit.ou(live.site, layout.OU_PEOPLE)),
                                filter=flt)
    return sorted((_state(e) for e in answer.get("entries", [])), key=lambda s: s["mail"])


def table(rows: list[dict[str, str]]) -> str:
    heads = ("mail", "state", "disabled", "quota", "origin")
    if not rows:
        return "no accounts in the directory"
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in heads]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


def show(site_file: str | Path, mail: str, *, where: Where = Where()) -> list[str]:
    """One account as the directory holds it (the password only by its scheme)."""
    live = _Live(site_file, where)
    entry = live.directory_job("show", mail)["entry"]
    state = _state(entry)
    in_site = _account(live.site, mail)
    return [
        f"dn: {entry.get('dn')}",
        f"mail: {state['mail']}",
        f"name: {(entry.get('cn') or ['-'])[0]}",
        f"state: {state['state']}",
        f"disabled services: {state['disabled']}",
        f"quota: {state['quota']}",
        f"origin: {state['origin']}",
        f"mailbox: {(entry.get('homeDirectory') or [dit.mail_home(state['mail'])])[0]}",
        f"password: {state['password']}",
        f"in the site file: {'yes' if in_site else 'no'}",
    ]
