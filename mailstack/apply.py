"""apply: render a site, then bring its hosts in line with the render through Ansible.

``apply(site_file, inventory=...)`` renders ``build/<site>/`` first (``core.render``), writes the
secrets the roles need and the tree does not hold (the LDAP service accounts' and the accounts'
initial passwords, ``{dn: password}``) to a temporary 0600 extra-vars file that is always
deleted afterwards, and runs ``ansible-playbook`` on the playbook of the collection
``mailstack.mail`` (package data, :mod:`mailstack.resources`) with its ``ansible.cfg``. The
collection's stdout callback (``mailstack.mail.events``) writes one JSON line per event;
progress is passed to ``out`` per host and step as it happens, and the result is an
:class:`ApplyReport` with every host's recap and the tasks that changed something. A failed
playbook raises :class:`ApplyFailed` naming the host, the task that really failed and its
first meaningful line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailstack import core, resources, secrets
from mailstack.errors import InputError, ToolError
from mailstack.plan import dit, layout, topology
from mailstack.site.model import Site

PLAYBOOK = resources.PLAYBOOK
ANSIBLE_CFG = resources.ANSIBLE_CFG
CALLBACK = "mailstack.mail.events"
EVENT_PREFIX = "@@mailstack "
RECAP_KEYS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")

Out = Callable[[str], object]


@dataclass
class HostResult:
    """One host's outcome: Ansible's recap counters and what changed."""

    host: str
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    changes: list[str] = field(default_factory=list)
    """Tasks that changed something, as ``role: task (items)``, in the order they ran."""
    diffs: list[tuple[str, str]] = field(default_factory=list)
    """With diff: (what, unified diff or LDIF change records) per changed file or entry set;
    a secret file's diff says only that it is hidden."""
    reconciled: list[tuple[str, str]] = field(default_factory=list)
    """What apply did with what the site no longer has, in order: (action, what), action one of
    locked, still locked, unlocked, pruned (a DN), archived (a mailbox), stopped (a unit),
    removed (a file, kept in the backup), deleted (a secret file)."""
    failure: str | None = None
    """What really failed on this host: the first failure no ``rescue:`` handled, as
    ``role: task: first meaningful line`` (later ones, such as handlers forced to run after it,
    do not replace it)."""
    failure_detail: str | None = None
    """That failure's whole text."""

    @property
    def recap(self) -> str:
        return " ".join(f"{key}={getattr(self, key)}" for key in RECAP_KEYS)


@dataclass
class ApplyReport:
    site: str
    build: Path
    inventory: Path
    check_only: bool
    hosts: dict[str, HostResult]
    seconds: float
    render_seconds: float = 0.0

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    @property
    def ok(self) -> bool:
        return all(not h.failed and not h.unreachable for h in self.hosts.values())

    def lines(self) -> list[str]:
        """The recap: one line per host, then what changed on it."""
        out = []
        for name, host in sorted(self.hosts.items()):
            out.append(f"{name}: {host.recap}")
            out += [f"  changed: {change}" for change in host.changes]
            out += [f"  {action}: {what}" for action, what in host.reconciled]
        verb = "would change" if self.check_only else "changed"
        out.append(f"{self.site}: {len(self.hosts)} hosts, {self.changed} tasks {verb}, "
                   f"{self.seconds:.1f} s")
        return out


class ApplyFailed(ToolError):
    """The playbook failed on at least one host; ``report`` holds what was seen."""

    def __init__(self, message: str, report: ApplyReport) -> None:
        super().__init__(message)
        self.report = report


def ldap_passwords(site: Site, store: secrets.SecretStore) -> dict[str, str]:
    """``{dn: password}`` for the service accounts, the admin entry (``ldap.root_password``)
    and every account's initial password."""
    out = {str(dit.service_dn(site, s)): store.read(layout.secret_service(s))
           for s in layout.SERVICE_ACCOUNTS}
    if site.ldap.root_password:
        out[str(dit.admin_dn(site))] = store.read(layout.SECRET_LDAP_ADMIN)
    for account in site.accounts:
        name = layout.account_secret(account)
        out[str(dit.account_dn(site, account.mail))] = store.read(name)
    return out


def secret_paths(build: Path) -> list[str]:
    """The paths of the rendered secret files (the manifest's ``secret``), on any host."""
    try:
        manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return sorted({path for host in manifest.get("hosts", {}).values()
                   for path, entry in host.get("files", {}).items() if entry.get("secret")})


def ansible_playbook() -> str:
    """The ansible-playbook beside this Python (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if not found:
        raise ToolError("ansible-playbook is not installed: pip install 'ansible-core>=2.16,<2.20'")
    return found


class _Events:
    """Turns the callback's JSON lines into progress lines and host results."""

    def __init__(self, out: Out) -> None:
        self.out = out
        self.hosts: dict[str, HostResult] = {}
        self.items: dict[tuple[str, str], list[str]] = {}
        self.item_diffs: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.stats: dict[str, dict[str, int]] | None = None
        self.play = ""

    def host(self, name: str) -> HostResult:
        return self.hosts.setdefault(name, HostResult(name))

    def feed(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "play":
            self.play = event.get("name", "")
            self.out(f"== {self.play}")
        elif kind == "no_hosts":
            self.out("   (no host of this inventory has that role)")
        elif kind in ("item_ok", "item_failed"):
            if event.get("changed") or kind == "item_failed":
                key = (event["host"], event["task"])
                self.items.setdefault(key, []).append(str(event.get("item", "")))
                if event.get("diff"):
                    self.item_diffs.setdefault(key, []).append(
                        (str(event.get("item", "")), event["diff"]))
        elif kind in ("ok", "failed", "skipped", "unreachable"):
            self.result(kind, event)
        elif kind == "stats":
            self.stats = event.get("hosts", {})

    def result(self, kind: str, event: dict) -> None:
        name = event["host"]
        host = self.host(name)
        step = f"{event['role']}: {event['task']}" if event.get("role") else event["task"]
        items = self.items.pop((name, event["task"]), [])
        diffs = self.item_diffs.pop((name, event["task"]), [])
        if event.get("diff") and event.get("changed"):
            diffs.append((step, event["diff"]))
        detail = f" ({', '.join(items)})" if items else ""
        if kind == "skipped":
            return
        if kind == "ok":
            host.reconciled += [(str(a), str(w)) for a, w in event.get("reconciled") or ()]
            if event.get("changed") and event.get("action", "").startswith("mailstack.mail.") \
                    and event.get("msg"):
                detail += f": {event['msg']}"  # the LDAP modules say what they changed
            if event.get("changed"):
                host.changes.append(step + detail)
            state = "changed" if event.get("changed") else "ok"
            self.out(f"{name}: {state:<8} {step}{detail}")
            for what, text in diffs:
                host.diffs.append((what, text))
                self.out(f"  --- {what}")
                for line in text.splitlines():
                    self.out(f"  {line}")
            return
        message = _failure_text(event)
        if kind == "failed" and event.get("ignored"):
            self.out(f"{name}: ignored  {step}: {message}")
            return
        if kind == "failed" and event.get("rescued"):
            self.out(f"{name}: rescued  {step}: {message}")
            return
        if host.failure is None:
            headline = _headline(event)
            if kind == "unreachable":
                headline = f"{headline} -- {UNREACHABLE_HINT}"
            host.failure = f"{step}: {headline}"
            host.failure_detail = f"{step}: {message}"
        label = "UNREACHABLE" if kind == "unreachable" else "FAILED"
        self.out(f"{name}: {label:<8} {step}: {message}")


_NOISE = re.compile(
    r"^(Shared connection to \S+ closed\.?|Connection to \S+ closed\.?"
    r"|Warning: Permanently added .* to the list of known hosts\.?)$")


def _clean(text: str) -> str:
    """Output without SSH's own lines and blank lines."""
    lines = text.replace("\r", "").splitlines()
    return "\n".join(line for line in lines if line.strip() and not _NOISE.match(line.strip()))


_GENERIC = ("non-zero return code", "MODULE FAILURE", "One or more items failed",
            "All items completed")

UNREACHABLE_HINT = (
    "the host stopped answering over SSH, so this step may not have finished; Postfix's and "
    "Dovecot's live configurations are only ever replaced whole by a checked copy, so none is "
    "half-written. Run apply again once the host answers: it takes up where this one stopped")


def _headline(event: dict) -> str:
    """A failure's first meaningful line: the task's own message when it says something (the
    roles' ``fail`` messages are written as one sentence), else the first line the command or
    module printed."""
    msg = " ".join(_clean(event.get("msg") or "").split("\n")).strip()
    if msg and not msg.startswith(_GENERIC):
        return msg
    for key in ("stderr", "stdout", "module_stderr"):
        for line in _clean(event.get(key) or "").splitlines():
            return line.strip()
    for item in event.get("failed_items") or ():
        return f"[{item.get('item')}] {item.get('msg')}".strip()
    return msg or "failed (no message)"


def _first_error(tail: str) -> str:
    """One line out of Ansible's own output: its first error line, else its last line."""
    lines = [line.strip() for line in _clean(tail).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "[ERROR]", "FATAL"))]
    return (errors or lines or [""])[0 if errors else -1]


def _failure_text(event: dict) -> str:
    """One line for a failed result: its message, and what the command printed."""
    msg = _clean(event.get("msg") or "").strip()
    output = " ".join(_clean(event.get(key) or "") for key in ("stdout", "stderr")).strip()
    parts = []
    if msg and not (msg.startswith("non-zero return code") and output):
        parts.append(msg)
    if output and output not in msg:
        parts.append(output if "rc" not in event else f"{output} (exit {event['rc']})")
    for item in event.get("failed_items") or ():
        parts.append(f"[{item.get('item')}] {item.get('msg')}".strip())
    if not parts and event.get("module_stderr"):
        parts.append(_clean(event["module_stderr"]).strip())
    return " | ".join(p.replace("\n", "; ") for p in parts) or "failed (no message)"


def run_playbook(inventory: Path, build: Path, extra_vars: dict, *, limit: str | None = None,
                 check_only: bool = False, diff: bool = False, out: Out = print
                 ) -> ApplyReport:
    """Run playbooks/site.yml on an already rendered ``build/<site>`` and report per host.

    ``extra_vars`` go through a temporary 0600 JSON file that is always deleted. The recap is
    passed to ``out`` at the end. Raises ApplyFailed when a host failed or was unreachable (its
    ``report`` holds what was seen), ToolError when ansible-playbook could not run the playbook.
    """
    fd, vars_path = tempfile.mkstemp(prefix="mailstack-apply-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(extra_vars, fh)
        argv = [ansible_playbook(), str(PLAYBOOK), "-i", str(inventory),
                "-e", f"mailstack__build={build}", "-e", f"@{vars_path}"]
        if limit:
            argv += ["--limit", limit]
        if check_only:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        env = dict(os.environ)
        env.update({
            "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
            "ANSIBLE_STDOUT_CALLBACK": CALLBACK,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PYTHONUNBUFFERED": "1",
            # secret files' diffs never leave Ansible (the callback hides them)
            "MAILSTACK_HIDE_DIFFS": json.dumps(secret_paths(build)),
        })
        rc, hosts, seconds, tail = _stream(argv, env, out)
    finally:
        os.unlink(vars_path)
    report = ApplyReport(build.name, build, inventory, check_only, hosts, seconds)
    bad = [h for h in hosts.values() if h.failed or h.unreachable]
    if rc != 0 and not (rc in (2, 4) and bad):
        raise ToolError(f"ansible-playbook exited with {rc}" + (f": {_first_error(tail)}"
                                                                 if tail else ""))
    for line in report.lines():
        out(line)
    if bad:
        reasons = "\n".join(
            f"{h.host}: " + (h.failure or f"unreachable ({h.recap})") for h in bad)
        raise ApplyFailed(f"apply of {report.site} failed on "
                          f"{', '.join(h.host for h in bad)}:\n{reasons}", report)
    return report


def _stream(argv: list[str], env: dict[str, str], out: Out
            ) -> tuple[int, dict[str, HostResult], float, str]:
    """Run ansible-playbook, feeding its events to ``out``; (rc, hosts, seconds, output tail)."""
    events = _Events(out)
    stderr_tail: deque[str] = deque(maxlen=40)
    other: deque[str] = deque(maxlen=40)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                encoding="utf-8", errors="replace", env=env, cwd=resources.ANSIBLE,
                                bufsize=1)
    except OSError as err:
        raise ToolError(f"cannot run {argv[0]}: {err}") from None

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip():
                stderr_tail.append(line.rstrip())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(EVENT_PREFIX):
                try:
                    events.feed(json.loads(line[len(EVENT_PREFIX):]))
                except (ValueError, KeyError):
                    other.append(line.rstrip())
            elif line.strip():
                other.append(line.rstrip())
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        reader.join(timeout=5)
    for name, counts in (events.stats or {}).items():
        host = events.host(name)
        for key in RECAP_KEYS:
            setattr(host, key, counts.get("failures" if key == "failed" else key, 0))
    tail = "\n".join(f"  {line}" for line in [*other, *stderr_tail][-12:])
    return rc, events.hosts, time.monotonic() - started, tail


def apply(site_file: str | Path, *, inventory: str | Path, build_dir: str | Path = "build",
          secrets_dir: str | Path | None = None, limit: str | None = None,
          check_only: bool = False, take_over: bool = False, diff: bool = False,
          prune: bool = False, out: Out = print) -> ApplyReport:
    """Render the site, then apply it to the hosts of ``inventory`` with Ansible.

    ``check_only`` runs the playbook in check mode: nothing live changes, but staged Postfix
    and Dovecot configurations are still checked by the daemons' own tools (in a staging
    directory that is removed) and the LDAP modules report what they would change. Raises
    InputError for a missing inventory or a bad site, ApplyFailed when a host fails, ToolError
    when Ansible cannot run.

    ``diff`` shows what changes (or would change, with ``check_only``): each file as a unified
    diff (secret files: only that they change), the directory's entries as LDIF change records
    with passwords hidden (``mailstack plan`` is ``check_only`` + ``diff``).

    A host mailstack has not applied before is surveyed first (``mailstack_survey``): when it
    already runs mail that someone else set up, the apply stops on it before anything changed
    and names what it found; ``take_over`` keeps a dated copy of those configurations on the
    host and goes on (mail stays where it is).

    Entries under the site's people, aliases and domains OUs that the render lacks are locked
    (``mailstackLocked: TRUE``); ``prune`` deletes them instead and moves the pruned accounts'
    mailboxes to a dated archive on the mail host. The recap lists them by DN (see
    :attr:`HostResult.reconciled`).
    """
    inventory = Path(inventory)
    if not inventory.exists():
        raise InputError(f"{inventory}: no such inventory")
    started = time.monotonic()
    site, _ = core.plan(site_file, secrets_dir=secrets_dir)
    if limit is not None:
        limit = ",".join(topology.limit_hosts(site, limit))
    store = secrets.SecretStore(secrets_dir or secrets.default_dir(site_file))
    passwords = ldap_passwords(site, store)
    # render keeps what others hold in build/<site>/ (the lab's lab/ with its inventory)
    build = core.render(site_file, build_dir, secrets_dir=secrets_dir).resolve()
    render_seconds = time.monotonic() - started
    out(f"rendered {build} in {render_seconds:.1f} s; applying with {inventory}"
        + (" (check mode)" if check_only else ""))
    try:
        report = run_playbook(inventory.resolve(), build,
                              {"mailstack__ldap_passwords": passwords,
                               "mailstack__take_over": take_over,
                               "mailstack__prune": prune},
                              limit=limit, check_only=check_only, diff=diff, out=out)
    except ApplyFailed as failed:
        failed.report.render_seconds = render_seconds
        raise
    report.render_seconds = render_seconds
    return report
