"""The hops to the outside world, proven in the lab only: routes reach the relay named,
credentials stay with their relay, faults defer instead of leaking, and remote mailboxes arrive
exactly once. (The lab's ``outside`` module makes the outside world's secrets; this one proves
the site's hops to it.)

Each route case takes the relay the site file names for it (not ``plan.relays.decide``, the
function whose tables Postfix reads and these cases test) and is proven by where the message
really arrives among the lab's stand-ins.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailstack.container import Container
from mailstack.plan import fetch as fetch_plan
from mailstack.plan import layout, topology
from mailstack.resources import lab_script
from mailstack.site.model import Site

WAIT = 40


@dataclass(frozen=True)
class Case:
    """One message to send through the site and where it must arrive."""

    what: str
    login: str
    sender: str
    rcpt: str
    relay: str
    token: str


def _sender_routed(site: Site, address: str) -> bool:
    """Does a sender route of the site file name ``address`` (itself, or its @domain)?"""
    address = address.lower()
    return any(key.lower() == address or (key.startswith("@") and
                                           address.endswith(key.lower()))
               for key in site.routes.senders)


def route_cases(site: Site) -> list[Case]:
    """A message for the default, each recipient route and each sender route, each with the
    relay the site file itself names for it (recipient routes win over sender routes, sender
    routes over the default: the site file's documented order), not with ``relays.decide``,
    whose tables are what these messages test."""
    # with several mail hosts the messages are submitted at the relay host: by its accounts
    accounts = [a for a in site.accounts if not topology.several_homes(site)
                or topology.home(site, a) == topology.relay_host(site)]
    owner = {a.lower(): acc.mail for acc in accounts for a in (acc.mail, *acc.aliases,
                                                               *acc.send_as)}
    if not accounts:
        return []
    first = accounts[0].mail
    outside = "verify@relay-check.example.net"
    cases: list[tuple[str, str, str, str]] = []
    plain = next((a.mail for a in accounts if not _sender_routed(site, a.mail)), None)
    if plain is not None:
        cases.append(("the default", plain, outside, site.relay.default))
    senders = list(site.routes.senders)
    for key, relay in site.routes.recipients.items():
        rcpt = f"verify@{key[1:]}" if key.startswith("@") else key
        # send it as a routed sender when there is one: the recipient route must still win
        sender = next((s for s in senders if not s.startswith("@")), first)
        cases.append((f"recipient route {key}", sender, rcpt, relay))
    for key, relay in site.routes.senders.items():
        if key.startswith("@"):
            domain = key[1:].lower()
            owned = next((a for a in owner if a.endswith("@" + domain)), None)
            if owned is None:
                continue
            sender = owned
        else:
            sender = key
        cases.append((f"sender route {key}", sender, outside, relay))
    return [Case(what, owner.get(sender.lower(), first), sender, rcpt, relay, uuid.uuid4().hex)
            for what, sender, rcpt, relay in cases if relay != "direct"]


class HopChecks:
    """Runs the lab-only checks; ``result(name, ok, detail)`` collects them."""

    def __init__(self, site: Site, site_file: str | Path, build_dir: str | Path,
                 values: dict[str, str], result: Callable[[str, bool, str], None]) -> None:
        from mailstack import lab
        from mailstack.lab.stand_ins import StandIns

        self.site, self.site_file, self.build_dir = site, site_file, build_dir
        self.values, self.result = values, result
        self.state = lab.state(site_file, build_dir=build_dir)
        self.world = StandIns(self.state)  # loaded once: the checks poll it
        # with several mail hosts the site's routes live on the relay host
        mta = topology.relay_host(site) if topology.several_homes(site) else \
            next(k for k, h in site.hosts.items() if "mta" in h.roles)
        assert mta is not None
        self.mail = Container(self.state.host(mta).name)
        self.client = Container(self.state.client.name)
        self.hostname = site.hosts[mta].hostname
        from mailstack.verify import public_ca

        # what 587's certificate chains to (tls.mode acme: the lab's ACME CA)
        self.public_ca = public_ca(site, values, self.state)

    # -- plumbing -----------------------------------------------------------------------

    def password(self, mail: str) -> str:
        account = next(a for a in self.site.accounts if a.mail == mail)
        return self.values[layout.account_secret(account)]

    def submit(self, case: Case) -> tuple[bool, str]:
        """Submit on 587 from the lab's client (STARTTLS, AUTH as the sender's owner)."""
        job = {"ca": self.public_ca, "host": self.hostname,
               "login": case.login, "pw": self.password(case.login), "from": case.sender,
               "to": case.rcpt, "token": case.token}
        proc = self.client.exec(["python3", "-c", lab_script("submit.py")],
                                input=json.dumps(job), timeout=60)
        return proc.returncode == 0, (proc.stderr or proc.stdout).strip()[-500:]

    def arrived(self, relay: str) -> list[str]:
        if self.site.relays[relay].auth:
            return self.world.provider_messages()
        return self.world.relay_messages(relay)

    def where(self, token: str) -> list[str]:
        return sorted(name for name in self.site.relays
                      if any(token in m for m in self.arrived(name)))

    def wait_where(self, token: str, seconds: float = WAIT) -> list[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen = self.where(token)
            if seen:
                time.sleep(1)  # let a wrong second copy show up too
                return self.where(token)
            time.sleep(1)
        return []

    def queued(self, token: str) -> str:
        """The deferral reason of a queued message with the token, or ''."""
        proc = self.mail.exec(["sh", "-c", "postqueue -j"])
        for line in proc.stdout.splitlines():
            item = json.loads(line)
            qid = item["queue_id"]
            body = self.mail.exec(["postcat", "-bq", qid]).stdout
            if token in body:
                reasons = [r.get("delay_reason", "") for r in item.get("recipients", [])]
                return "; ".join(reasons) or "queued"
        return ""

    def flush(self) -> None:
        self.mail.exec(["postqueue", "-f"])

    # -- checks ---------------------------------------------------------------------------

    def routes(self) -> None:
        auth_relays = {n for n, r in self.site.relays.items() if r.auth}
        for case in route_cases(self.site):
            ok, detail = self.submit(case)
            name = (f"{case.what}: {case.sender} -> {case.rcpt} arrives at relay "
                    f"'{case.relay}' and nowhere else")
            if not ok:
                self.result(name, False, f"submission failed: {detail}")
                continue
            seen = self.wait_where(case.token)
            self.result(name, seen == [case.relay],
                        f"seen at {seen or 'no relay'} after {WAIT} s; queue: "
                        f"{self.queued(case.token) or 'empty'}")
            relay = self.site.relays[case.relay]
            if relay.auth and seen == [case.relay]:
                log = self.world.provider_log()
                self.result(f"{case.what}: authenticated at '{case.relay}' as {relay.auth.user}",
                            f"sasl_username={relay.auth.user}" in log,
                            f"no sasl_username={relay.auth.user} in the provider's log")
        for name in sorted(self.site.relays):
            if name in auth_relays:
                continue
            tried = self.world.relay_auth_attempts(name)
            self.result(f"no credentials were offered to relay '{name}'", not tried,
                        f"login attempts seen there: {tried}")

    def _fault(self, name: str, check: str, breaks: Callable[[], object],
               mends: Callable[[], object]) -> None:
        """Break relay ``name``, send through it: deferred, not bounced, nowhere else; mend it,
        flush: the deferred message goes out."""
        case = next((c for c in route_cases(self.site) if c.relay == name), None)
        if case is None:
            return
        breaks()
        try:
            ok, detail = self.submit(case)
            time.sleep(8)
            reason = self.queued(case.token)
            seen = self.where(case.token)
            self.result(check, ok and bool(reason) and not seen,
                        f"submitted: {ok} {detail}; queue: {reason or 'not queued'}; seen at "
                        f"{seen or 'no relay'}")
        finally:
            mends()
        self.flush()
        seen = self.wait_where(case.token)
        self.result(f"relay '{name}' mended: the deferred message goes out", seen == [name],
                    f"seen at {seen or 'no relay'}")

    def wrong_credentials(self) -> None:
        for name, relay in sorted(self.site.relays.items()):
            if not relay.auth:
                continue
            user, right = relay.auth.user, self.values[relay.auth.password_secret]
            self._fault(
                name, f"wrong credentials for relay '{name}': the message is deferred, not "
                      "bounced, not sent elsewhere",
                functools.partial(self.world.set_provider_password, user,
                                  "wrong-" + uuid.uuid4().hex),
                functools.partial(self.world.set_provider_password, user, right))

    def bad_certificate(self) -> None:
        for name, relay in sorted(self.site.relays.items()):
            if relay.tls == "encrypt" or relay.auth:
                continue
            self._fault(
                name, f"relay '{name}' with a certificate that does not verify is not used "
                      "(deferred, nothing sent in clear)",
                functools.partial(self.world.break_relay_certificate, name),
                functools.partial(self.world.restore_relay_certificate, name))

    def count_local(self, account: str, token: str) -> int:
        proc = self.mail.exec(["doveadm", "search", "-u", account, "mailbox", "INBOX",
                               "header", "subject", token])
        return len([line for line in proc.stdout.splitlines() if line.strip()])

    def fetch(self) -> None:
        for f in self.site.fetch:
            ident = fetch_plan.fetch_id(f)
            unit = f"{fetch_plan.UNIT}{ident}.service"
            tokens = [uuid.uuid4().hex, uuid.uuid4().hex]
            for token, seen in zip(tokens, (False, True), strict=True):
                raw = (f"From: someone@outside.example.net\r\nTo: {f.user}\r\n"
                       f"Subject: mailstack verify {token}\r\nMessage-ID: <{token}@lab.test>\r\n"
                       f"\r\n{token}\r\n")
                self.world.put_provider_message(f.user, raw, seen=seen)
            label = f"{f.protocol} {f.user} at {f.host} -> {f.account}"
            counts = []
            for _ in range(3):  # each run is a new getmail process: state lives on disk
                run = self.mail.exec(["systemctl", "start", unit], timeout=120)
                if run.returncode != 0:
                    status = self.mail.exec(["journalctl", "-u", unit, "-n", "8", "--no-pager"])
                    self.result(f"{label}: {unit} runs", False, status.stdout[-800:])
                    break
                deadline = time.monotonic() + WAIT
                while time.monotonic() < deadline and not all(
                        self.count_local(f.account, t) for t in tokens):
                    time.sleep(1)
                counts.append([self.count_local(f.account, t) for t in tokens])
            else:
                self.result(f"{label}: an unread and an already-read message arrive exactly once "
                            "(three runs, each a new process)",
                            all(c == [1, 1] for c in counts), f"copies per run: {counts}")
                remote = self.world.provider_mailbox(f.user)
                left = [t for t in tokens if any(t in m for m in remote)]
                want = tokens if f.keep else []
                self.result(f"{label}: {'kept' if f.keep else 'removed'} at the provider",
                            left == want, f"left at the provider: {len(left)} of 2")

    def timers(self) -> None:
        for f in self.site.fetch:
            unit = f"{fetch_plan.UNIT}{fetch_plan.fetch_id(f)}.timer"
            proc = self.mail.exec(["systemctl", "is-active", unit])
            self.result(f"{unit} is active", proc.stdout.strip() == "active",
                        proc.stdout.strip())


    def vacation(self) -> None:
        """Each account with a vacation in the site file: two messages from one outside sender
        (a new one each run) get one reply, at the relay outside mail takes. Nothing is checked
        when no account has one (the lab's example has none: its tests count relay messages)."""
        for account in (a for a in self.site.accounts if a.vacation):
            sender = f"vacation-{uuid.uuid4().hex[:12]}@outside.example.net"
            for _ in range(2):
                token = uuid.uuid4().hex
                raw = (f"From: {sender}\nTo: {account.mail}\nSubject: mailstack verify {token}\n"
                       f"Message-ID: <{token}@lab.test>\n\n{token}\n")
                self.mail.exec(["/usr/sbin/sendmail", "-f", sender, account.mail], input=raw)
            replies: list[str] = []
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                replies = [name for name in sorted(self.site.relays)
                           for m in self.arrived(name) if sender in m]
                if replies:
                    time.sleep(5)  # a second reply would come right after the first
                    replies = [name for name in sorted(self.site.relays)
                               for m in self.arrived(name) if sender in m]
                    break
                time.sleep(1)
            self.result(f"vacation of {account.mail}: two messages from one sender get one "
                        "reply", len(replies) == 1,
                        f"{len(replies)} replies seen (at {replies or 'no relay'}) after "
                        f"{WAIT} s")


PARTS = ("routes", "wrong_credentials", "bad_certificate", "timers", "fetch", "vacation")


def run(site: Site, site_file: str | Path, build_dir: str | Path, values: dict[str, str],
        result: Callable[[str, bool, str], None], parts: tuple[str, ...] = PARTS) -> None:
    checks = HopChecks(site, site_file, build_dir, values, result)
    for part in parts:
        try:
            getattr(checks, part)()
        except Exception as err:  # a crashed check is a failed check, with its reason
            result(f"outside checks: {part}", False, f"{type(err).__name__}: {err}")
