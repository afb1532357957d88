"""Network probes of a live mail site, run from a client outside the server's own address.

Stand-alone (stdlib, plus ldap3 for the LDAP probes): ``verify`` copies this file into the lab's
client container, or runs it where verify runs for real servers, feeds a JSON job on stdin and
reads one JSON list of ``{"name", "ok", "detail"}`` from stdout. Each probe states what it saw.
"""

from __future__ import annotations

import contextlib
import email.message
import http.client
import imaplib
import json
import plistlib
import poplib
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

TIMEOUT = 15
SIEVE_PORT = 4190
VERIFY_SCRIPT = "mailstack-verify"


class ManageSieveError(Exception):
    """A ManageSieve command answered NO or BYE."""


class ManageSieve:
    """A small ManageSieve client (RFC 5804: a line protocol with literals)."""

    def __init__(self, host: str, ctx: ssl.SSLContext) -> None:
        self.host, self.ctx = host, ctx
        self.sock: socket.socket = socket.create_connection((host, SIEVE_PORT), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.capabilities = self.read()

    @staticmethod
    def quoted(text: str) -> bytes:
        return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'

    def read(self) -> list[bytes]:
        """Lines up to the final OK/NO/BYE (literals read whole); raise on NO/BYE."""
        lines: list[bytes] = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("ManageSieve: the server closed the connection")
            line = line.rstrip(b"\r\n")
            literal = re.search(rb"\{(\d+)\+?\}$", line)
            if literal:
                line = line[:literal.start()] + self.file.read(int(literal.group(1)))
                line += self.file.readline().rstrip(b"\r\n")
            word = line.split(b" ", 1)[0].upper()
            if word in (b"OK", b"NO", b"BYE"):
                if word != b"OK":
                    raise ManageSieveError(line.decode(errors="replace"))
                return lines
            lines.append(line)

    def command(self, *parts: bytes) -> list[bytes]:
        self.sock.sendall(b" ".join(parts) + b"\r\n")
        return self.read()

    def starttls(self) -> None:
        self.command(b"STARTTLS")
        self.sock = self.ctx.wrap_socket(self.sock, server_hostname=self.host)
        self.file = self.sock.makefile("rb")
        self.capabilities = self.read()  # RFC 5804 2.2: sent again after the handshake

    def authenticate(self, user: str, password: str) -> None:
        import base64

        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.command(b"AUTHENTICATE", self.quoted("PLAIN"), self.quoted(token))

    def scripts(self) -> dict[str, bool]:
        """Script name -> active."""
        out = {}
        for line in self.command(b"LISTSCRIPTS"):
            m = re.match(rb'"((?:[^"\\]|\\.)*)"( ACTIVE)?', line)
            if m:
                out[m.group(1).decode()] = bool(m.group(2))
        return out

    def put(self, name: str, text: str) -> None:
        data = text.encode()
        self.sock.sendall(b"PUTSCRIPT " + self.quoted(name) + b" {%d+}\r\n" % len(data) + data
                          + b"\r\n")
        self.read()

    def logout(self) -> None:
        with contextlib.suppress(Exception):
            self.command(b"LOGOUT")
        with contextlib.suppress(Exception):
            self.sock.close()


class Probe:
    def __init__(self, job: dict) -> None:
        self.job = job
        self.host = job["hostname"]
        self.results: list[dict] = []
        self.sent: list[str] = []  # tokens of the messages this run sent
        self.ctx = ssl.create_default_context(cadata=job["ca"])

    def result(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append({"name": name, "ok": bool(ok), "detail": "" if ok else detail})
        return ok

    def run(self, name: str, fn, *args) -> bool:
        try:
            ok, detail = fn(*args)
        except Exception as err:  # a probe that crashes has failed, with the reason
            ok, detail = False, f"{type(err).__name__}: {err}"
        return self.result(name, ok, detail)

    # -- SMTP ---------------------------------------------------------------------------

    def smtp(self, port: int) -> smtplib.SMTP:
        if port == 465:
            return smtplib.SMTP_SSL(self.host, port, timeout=TIMEOUT, context=self.ctx)
        return smtplib.SMTP(self.host, port, timeout=TIMEOUT)

    def message(self, sender: str, rcpt: str, token: str) -> email.message.EmailMessage:
        msg = email.message.EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, rcpt, f"mailstack verify {token}"
        msg["Message-ID"] = f"<{token}@verify.mailstack.invalid>"
        msg.set_content(f"verify token {token}\n")
        return msg

    def send(self, port: int, sender: str, rcpt: str, token: str,
             login: tuple[str, str] | None = None) -> tuple[bool, str]:
        with self.smtp(port) as s:
            s.ehlo("client.verify.mailstack.invalid")
            if port != 465:
                s.starttls(context=self.ctx)
                s.ehlo("client.verify.mailstack.invalid")
            if login:
                s.login(*login)
            refused = s.send_message(self.message(sender, rcpt, token), sender, [rcpt])
        return not refused, f"refused: {refused}"

    def expect_refusal(self, port: int, sender: str, rcpt: str, want: str,
                       login: tuple[str, str] | None = None, tls: bool = True) -> tuple[bool, str]:
        with self.smtp(port) as s:
            s.ehlo("client.verify.mailstack.invalid")
            if tls and port != 465:
                s.starttls(context=self.ctx)
                s.ehlo("client.verify.mailstack.invalid")
            if login:
                s.login(*login)
            code, text = s.mail(sender)
            if code >= 400:
                answer = f"{code} {text.decode(errors='replace')}"
                return want in answer, f"MAIL FROM answered {answer}"
            code, text = s.rcpt(rcpt)
            answer = f"{code} {text.decode(errors='replace')}"
            with contextlib.suppress(smtplib.SMTPException):
                s.rset()
            return code >= 500 and want in answer, f"RCPT TO <{rcpt}> answered {answer}"

    def rcpt_accepted(self, port: int, sender: str, rcpt: str) -> tuple[bool, str]:
        """MAIL and RCPT only, then RSET: whether ``rcpt`` is a recipient (nothing is sent)."""
        with self.smtp(port) as s:
            s.ehlo("client.verify.mailstack.invalid")
            s.starttls(context=self.ctx)
            s.ehlo("client.verify.mailstack.invalid")
            s.mail(sender)
            code, text = s.rcpt(rcpt)
            with contextlib.suppress(smtplib.SMTPException):
                s.rset()
            return code == 250, f"RCPT TO <{rcpt}> answered {code} {text.decode(errors='replace')}"

    def auth_offered(self, port: int, tls: bool) -> bool:
        with self.smtp(port) as s:
            s.ehlo("client.verify.mailstack.invalid")
            if tls and port != 465:
                s.starttls(context=self.ctx)
                s.ehlo("client.verify.mailstack.invalid")
            return s.has_extn("auth")

    # -- IMAP / POP3 ----------------------------------------------------------------------

    def imap_count(self, mode: str, user: str, password: str) -> int:
        conn: imaplib.IMAP4
        if mode == "imaps":
            conn = imaplib.IMAP4_SSL(self.host, 993, ssl_context=self.ctx, timeout=TIMEOUT)
        else:
            conn = imaplib.IMAP4(self.host, 143, timeout=TIMEOUT)
            conn.starttls(ssl_context=self.ctx)
        try:
            conn.login(user, password)
            _, data = conn.select("INBOX", readonly=True)
            count = data[0]
            if count is None:  # no EXISTS in the answer
                raise imaplib.IMAP4.error("SELECT INBOX: the server sent no message count")
            return int(count)
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def imap_search(self, user: str, password: str, token: str) -> int:
        conn = imaplib.IMAP4_SSL(self.host, 993, ssl_context=self.ctx, timeout=TIMEOUT)
        try:
            conn.login(user, password)
            conn.select("INBOX", readonly=True)
            _, data = conn.search(None, "SUBJECT", f'"{token}"')
            return len(data[0].split())
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def pop3_count(self, mode: str, user: str, password: str) -> int:
        conn: poplib.POP3
        if mode == "pop3s":
            conn = poplib.POP3_SSL(self.host, 995, context=self.ctx, timeout=TIMEOUT)
        else:
            conn = poplib.POP3(self.host, 110, timeout=TIMEOUT)
            conn.stls(context=self.ctx)
        try:
            conn.user(user)
            conn.pass_(password)
            return conn.stat()[0]
        finally:
            with contextlib.suppress(Exception):
                conn.quit()

    def wait_for(self, user: str, password: str, token: str, expect: int = 1) -> tuple[bool, str]:
        deadline = time.monotonic() + 30
        seen = 0
        while time.monotonic() < deadline:
            seen = self.imap_search(user, password, token)
            if seen >= expect:
                return True, ""
            time.sleep(0.5)
        return False, (f"{expect} message(s) with subject token {token} were accepted for "
                       f"{user}, {seen} seen over IMAP after 30 s")

    # -- the checks ---------------------------------------------------------------------

    def delivery(self) -> None:
        if not self.job.get("writes", True):
            return  # mails real users: only with --allow-writes against real servers
        for acc in self.writable():
            user, pw = acc["mail"], acc["password"]
            if not self.may(acc, "imap"):
                continue  # read over IMAP below; the access part checks the others
            token = self.new_token()
            if not self.run(f"port 25: a message to {user} is accepted", self.send, 25,
                            "sender@outside.example.net", user, token):
                continue
            if not self.run(f"{user}: the message lands and is seen over IMAP", self.wait_for,
                            user, pw, token):
                continue
            counts: dict[str, int] = {}
            for mode in ("imaps", "imap+starttls"):
                counts[mode] = self.imap_count(mode, user, pw)
            if self.may(acc, "pop3"):
                for mode in ("pop3s", "pop3+starttls"):
                    counts[mode] = self.pop3_count(mode, user, pw)
            labels = {"imaps": "IMAP 993", "imap+starttls": "IMAP 143+STARTTLS",
                      "pop3s": "POP3 995", "pop3+starttls": "POP3 110+STARTTLS"}
            self.result(f"{user}: {', '.join(labels[m] for m in counts)} see the same messages",
                        len(set(counts.values())) == 1, f"counts differ: {counts}")

    def writable(self) -> list[dict]:
        """The accounts verify may mail: all in the lab, the site's probe account elsewhere."""
        allowed = self.job.get("write_accounts")
        return [a for a in self.job["accounts"] if allowed is None or a["mail"] in allowed]

    @staticmethod
    def may(acc: dict, service: str) -> bool:
        """Whether the account may log in to ``service`` (imap, pop3, submission)."""
        return acc.get("enabled", True) and service in acc.get("protocols", (service,))

    def new_token(self) -> str:
        token = uuid.uuid4().hex
        self.sent.append(token)
        return token

    def cleanup(self) -> tuple[bool, str]:
        """Delete, from the probe account's INBOX, the messages this run sent and nothing else
        (the subject carries one of this run's tokens); wait up to 30 s for late ones."""
        acc = self.writable()[0]
        conn = imaplib.IMAP4_SSL(self.host, 993, ssl_context=self.ctx, timeout=TIMEOUT)
        try:
            conn.login(acc["mail"], acc["password"])
            left, deadline = set(self.sent), time.monotonic() + 30
            while left and time.monotonic() < deadline:
                conn.select("INBOX")
                for token in sorted(left):
                    _, data = conn.search(None, "SUBJECT", f'"{token}"')
                    for num in data[0].split():
                        conn.store(num, "+FLAGS", "\\Deleted")
                        left.discard(token)
                conn.expunge()
                if left:
                    time.sleep(1)
            return not left, f"{len(left)} of {len(self.sent)} messages never arrived"
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def submission(self) -> None:
        accounts = [a for a in self.job["accounts"] if self.may(a, "submission")] or \
            self.job["accounts"]
        writable = [a for a in self.writable() if self.may(a, "submission")]
        me = writable[0] if writable else accounts[0]
        login = (me["mail"], me["password"])
        self.run("587: no AUTH before STARTTLS",
                 lambda: (not self.auth_offered(587, False), "AUTH offered in clear"))
        self.run("587: AUTH after STARTTLS",
                 lambda: (self.auth_offered(587, True), "no AUTH after STARTTLS"))
        self.run("465: TLS from the first byte, AUTH offered",
                 lambda: (self.auth_offered(465, False), "no AUTH on 465"))
        rcpt = me["mail"] if self.job.get("write_accounts") is not None else accounts[-1]["mail"]
        for sender in [me["mail"], *me["aliases"]] if self.job.get("writes", True) else []:
            for port in (587, 465):
                self.run(f"{port}: {me['mail']} may send as {sender}", self.send, port, sender,
                         rcpt, self.new_token(), login)
        others = [a for a in accounts if a["mail"] != me["mail"]]
        if others:
            other = others[0]["mail"]
            self.run(f"587: {me['mail']} may not send as {other}", self.expect_refusal, 587,
                     other, rcpt, "Sender address rejected: not owned by user", login)
        self.run("587: unauthenticated submission is refused with 'Authentication required'",
                 self.expect_refusal, 587, me["mail"], rcpt, "Authentication required")
        self.run("465: unauthenticated submission is refused with 'Authentication required'",
                 self.expect_refusal, 465, me["mail"], rcpt, "Authentication required")

        def wrong_password() -> tuple[bool, str]:
            try:
                with self.smtp(587) as s:
                    s.ehlo("client.verify.mailstack.invalid")
                    s.starttls(context=self.ctx)
                    s.ehlo("client.verify.mailstack.invalid")
                    # one AUTH PLAIN: login() would try LOGIN after PLAIN, two failures
                    # that fail2ban counts (plan/fail2ban.py)
                    s.user, s.password = me["mail"], me["password"] + "-wrong"
                    s.auth("PLAIN", s.auth_plain)
            except smtplib.SMTPAuthenticationError as err:
                return err.smtp_code == 535, f"answered {err.smtp_code}"
            return False, "a wrong password was accepted"

        self.run("587: a wrong password is refused", wrong_password)

    # -- per-account services and locked accounts -----------------------------------------

    def login(self, service: str, user: str, password: str) -> tuple[bool, str]:
        """One login to ``service``: (accepted, the server's answer)."""
        if service == "imap":
            conn = imaplib.IMAP4_SSL(self.host, 993, ssl_context=self.ctx, timeout=TIMEOUT)
            try:
                conn.login(user, password)
                return True, "IMAP LOGIN accepted"
            except imaplib.IMAP4.error as err:
                return False, f"IMAP answered {err}"
            finally:
                with contextlib.suppress(Exception):
                    conn.logout()
        if service == "pop3":
            pop = poplib.POP3_SSL(self.host, 995, context=self.ctx, timeout=TIMEOUT)
            try:
                pop.user(user)
                pop.pass_(password)
                return True, "POP3 PASS accepted"
            except poplib.error_proto as err:
                return False, f"POP3 answered {err}"
            finally:
                with contextlib.suppress(Exception):
                    pop.quit()
        if service == "sieve":
            sieve = ManageSieve(self.host, self.ctx)
            try:
                sieve.starttls()
                sieve.authenticate(user, password)
                return True, "ManageSieve AUTHENTICATE accepted"
            except ManageSieveError as err:
                return False, f"ManageSieve answered {err}"
            finally:
                sieve.logout()
        with self.smtp(587) as s:
            s.ehlo("client.verify.mailstack.invalid")
            s.starttls(context=self.ctx)
            s.ehlo("client.verify.mailstack.invalid")
            # one AUTH PLAIN (login() would try LOGIN too: two failures for fail2ban)
            s.user, s.password = user, password
            try:
                s.auth("PLAIN", s.auth_plain)
                return True, "AUTH PLAIN accepted"
            except smtplib.SMTPAuthenticationError as err:
                return False, f"AUTH answered {err.smtp_code} {err.smtp_error!r}"

    def access(self) -> None:
        """An account's disabled services refuse its login, its others work and mail still
        arrives; a locked account logs in nowhere."""
        services = ("imap", "pop3", "submission",
                    *(("sieve",) if self.job.get("sieve", {}).get("managesieve") else ()))
        for acc in self.job["accounts"]:
            user, pw = acc["mail"], acc["password"]
            closed = [s for s in services if not self.may(acc, s)]
            if not closed:
                continue
            if not acc.get("enabled", True):
                def nowhere(user=user, pw=pw) -> tuple[bool, str]:
                    seen = {s: self.login(s, user, pw) for s in services}
                    opened = {s: answer for s, (ok, answer) in seen.items() if ok}
                    return not opened, f"logged in: {opened}"

                names = ["IMAP", "POP3", "submission", "ManageSieve"][:len(services)]
                self.run(f"{user} (locked): {', '.join(names[:-1])} and {names[-1]} refuse its "
                         "login", nowhere)
                continue
            for service in closed:
                def refused(service=service, user=user, pw=pw) -> tuple[bool, str]:
                    ok, answer = self.login(service, user, pw)
                    return not ok, answer

                self.run(f"{user}: {service} refuses its login (not in its protocols)", refused)
            for service in (s for s in services if s not in closed):
                self.run(f"{user}: {service} accepts its login (control)", self.login, service,
                         user, pw)
            if not self.job.get("writes", True) or acc not in self.writable():
                continue
            token = self.new_token()
            if not self.run(f"port 25: a message to {user} is accepted", self.send, 25,
                            "sender@outside.example.net", user, token):
                continue
            reader = next((s for s in ("imap", "pop3") if s not in closed), None)
            if reader == "imap":
                self.run(f"{user}: mail still arrives (seen over IMAP)", self.wait_for, user,
                         pw, token)
            elif reader == "pop3":
                self.run(f"{user}: mail still arrives (seen over POP3)", self.pop3_wait, user,
                         pw, token)

    # -- distribution lists -------------------------------------------------------------

    def lists(self) -> None:
        """Each list's address reaches each member exactly once (nested groups, a member
        reached twice); a list that is not ``post: anyone`` refuses mail from outside on port
        25, and a members-only list refuses a logged-in non-member on 587."""
        accounts = {a["mail"].lower(): a for a in self.job["accounts"]}
        outside = "sender@outside.example.net"
        for lst in self.job.get("lists", []):
            address = lst["address"]
            if lst["post"] != "anyone":
                self.run(f"port 25: mail from outside to the list {address} (post: "
                         f"{lst['post']}) is refused", self.expect_refusal, 25, outside, address,
                         lst["refusal"], None, True)
            members = [accounts[m.lower()] for m in lst["members"] if m.lower() in accounts]
            writable = {a["mail"].lower() for a in self.writable()}
            if not self.job.get("writes", True) or \
                    any(m["mail"].lower() not in writable for m in members):
                # a posting mails every member: in the lab, or on real servers with
                # --allow-writes only for a list whose members are all the probe account
                continue
            poster = next((a for a in members if self.may(a, "submission")), None) \
                if lst["post"] == "members" else \
                next((a for a in self.writable() if self.may(a, "submission")), None)
            token = self.new_token()
            if lst["post"] == "anyone":
                sent = self.run(f"port 25: a message to the list {address} is accepted",
                                self.send, 25, outside, address, token)
            elif poster is None:
                continue
            else:
                sent = self.run(f"587: {poster['mail']} posts to the list {address}", self.send,
                                587, poster["mail"], address, token,
                                (poster["mail"], poster["password"]))
            if not sent:
                continue
            for acc in members:
                if not self.may(acc, "imap"):
                    continue
                self.run(f"{acc['mail']}: the list {address}'s message arrives exactly once",
                         self.exactly_once, acc["mail"], acc["password"], token)
            if lst["post"] == "members":
                stranger = next((a for a in self.job["accounts"] if a["mail"].lower() not in
                                 {m.lower() for m in lst["members"]}
                                 and self.may(a, "submission")), None)
                if stranger is not None:
                    self.run(f"587: {stranger['mail']} (no member) may not post to {address}",
                             self.expect_refusal, 587, stranger["mail"], address,
                             lst["refusal"], (stranger["mail"], stranger["password"]))

    def exactly_once(self, user: str, password: str, token: str) -> tuple[bool, str]:
        """The message arrives, and a few seconds later there is still one copy."""
        ok, detail = self.wait_for(user, password, token)
        if not ok:
            return ok, detail
        time.sleep(3)  # a second copy would come from the same queue run
        seen = self.imap_search(user, password, token)
        return seen == 1, f"{seen} copies of the message with token {token} for {user}"

    def pop3_wait(self, user: str, password: str, token: str) -> tuple[bool, str]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pop = poplib.POP3_SSL(self.host, 995, context=self.ctx, timeout=TIMEOUT)
            try:
                pop.user(user)
                pop.pass_(password)
                count = pop.stat()[0]
                for num in range(count, 0, -1):
                    if token.encode() in b"\n".join(pop.top(num, 0)[1]):
                        return True, ""
            finally:
                with contextlib.suppress(Exception):
                    pop.quit()
            time.sleep(0.5)
        return False, f"no message with token {token} for {user} over POP3 after 30 s"

    def port25(self) -> None:
        me = self.job["accounts"][0]["mail"]
        outside = self.job["outside_rcpt"]
        self.run("port 25: no AUTH offered before STARTTLS",
                 lambda: (not self.auth_offered(25, False), "AUTH offered"))
        self.run("port 25: no AUTH offered after STARTTLS",
                 lambda: (not self.auth_offered(25, True), "AUTH offered"))
        self.run(f"port 25: relaying to {outside} is refused (no open relay)",
                 self.expect_refusal, 25, "sender@outside.example.net", outside,
                 "Relay access denied", None, False)
        # refused as a forged sender (5.7.1 Sender address rejected) or as relaying
        self.run(f"port 25: relaying with a forged local sender {me} is refused",
                 self.expect_refusal, 25, me, outside, "5.7.1", None, False)
        # impersonation: the site's own senders from a client that did not log in
        local = self.job["accounts"][-1]["mail"]
        self.run(f"port 25: a forged sender {me} of the site's own domain is refused, even to "
                 f"local {local}", self.expect_refusal, 25, me, local, "5.7.1", None, False)
        # only real recipients: no system user; postmaster@ and abuse@ of every domain
        system = f"nobody@{self.job['hostname']}"
        self.run(f"port 25: a system account ({system}) is not a recipient",
                 self.expect_refusal, 25, "sender@outside.example.net", system, "5.1.1", None,
                 True)
        for domain in self.job.get("domains", []):
            for role in ("postmaster", "abuse"):
                self.run(f"port 25: {role}@{domain} is a recipient", self.rcpt_accepted, 25,
                         "sender@outside.example.net", f"{role}@{domain}")
        for address in self.job.get("send_as", []):
            self.run(f"port 25: mail as {address} (an address the site sends as) from outside "
                     "is refused", self.expect_refusal, 25, address, local, "5.7.1", None, False)
        for address in self.job.get("locked_rcpt", []):
            self.run(f"port 25: mail to the locked address {address} is refused (5.2.1)",
                     self.expect_refusal, 25, "sender@outside.example.net", address, "5.2.1",
                     None, True)

    def plaintext(self) -> None:
        me = self.job["accounts"][0]

        def imap_before_tls() -> tuple[bool, str]:
            conn = imaplib.IMAP4(self.host, 143, timeout=TIMEOUT)
            try:
                caps = conn.capabilities
                if "LOGINDISABLED" not in caps:
                    return False, f"capabilities before STARTTLS: {' '.join(caps)}"
                try:
                    conn.login(me["mail"], me["password"])
                except imaplib.IMAP4.error as err:
                    return True, str(err)
                return False, "LOGIN succeeded before STARTTLS"
            finally:
                with contextlib.suppress(Exception):
                    conn.shutdown()

        def pop3_before_tls() -> tuple[bool, str]:
            conn = poplib.POP3(self.host, 110, timeout=TIMEOUT)
            try:
                conn.user(me["mail"])
                conn.pass_(me["password"])
            except poplib.error_proto as err:
                return "Plaintext authentication disallowed" in str(err), str(err)
            finally:
                with contextlib.suppress(Exception):
                    conn.quit()
            return False, "USER/PASS succeeded before STLS"

        self.run("IMAP 143: plaintext login refused before STARTTLS", imap_before_tls)
        self.run("POP3 110: plaintext login refused before STLS", pop3_before_tls)

    # -- TLS on every endpoint ----------------------------------------------------------

    @staticmethod
    def _until(sock: socket.socket, done) -> bytes:
        data = b""
        while not done(data):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed before TLS: {data[-200:]!r}")
            data += chunk
        return data

    def plain_to_tls(self, host: str, port: int, how: str) -> socket.socket:
        """A connection to ``port`` at the point where TLS starts (after the protocol's
        STARTTLS where there is one)."""
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        last = re.compile(rb"(^|\r\n)(\d{3}) [^\r\n]*\r\n$")
        try:
            if how == "smtp":
                self._until(sock, lambda d: bool(last.search(d)))
                sock.sendall(b"EHLO client.verify.mailstack.invalid\r\n")
                self._until(sock, lambda d: bool(last.search(d)))
                sock.sendall(b"STARTTLS\r\n")
                answer = self._until(sock, lambda d: bool(last.search(d)))
                if not answer.startswith(b"220"):
                    raise ConnectionError(f"STARTTLS answered {answer!r}")
            elif how == "imap":
                self._until(sock, lambda d: d.endswith(b"\r\n"))
                sock.sendall(b"t STARTTLS\r\n")
                answer = self._until(sock, lambda d: b"t " in d and d.endswith(b"\r\n"))
                if b"t OK" not in answer:
                    raise ConnectionError(f"STARTTLS answered {answer!r}")
            elif how == "pop3":
                self._until(sock, lambda d: d.endswith(b"\r\n"))
                sock.sendall(b"STLS\r\n")
                if not self._until(sock, lambda d: d.endswith(b"\r\n")).startswith(b"+OK"):
                    raise ConnectionError("STLS refused")
            elif how == "sieve":
                self._until(sock, lambda d: re.search(rb"(^|\r\n)OK[^\r\n]*\r\n$", d) is not None)
                sock.sendall(b"STARTTLS\r\n")
                if not self._until(sock, lambda d: d.endswith(b"\r\n")).startswith(b"OK"):
                    raise ConnectionError("STARTTLS refused")
        except BaseException:
            sock.close()
            raise
        return sock

    def handshake(self, host: str, port: int, how: str, ctx: ssl.SSLContext,
                  name: str | None) -> tuple[str | None, str | None]:
        """(TLS version, cipher) of a handshake with ``ctx``."""
        with self.plain_to_tls(host, port, how) as raw, ctx.wrap_socket(
                raw, server_hostname=name) as tls:
            cipher = tls.cipher()
            return tls.version(), cipher[0] if cipher else None

    def refused(self, host: str, port: int, how: str, ctx: ssl.SSLContext) -> tuple[bool, str]:
        try:
            version, cipher = self.handshake(host, port, how, ctx, None)
        except (ssl.SSLError, ConnectionResetError) as err:
            return True, str(err)
        return False, f"handshake succeeded: {version} {cipher}"

    def weak_cipher_context(self) -> ssl.SSLContext:
        """Only anonymous (no certificate) and NULL (no encryption) suites, TLS 1.2 at most
        (TLS 1.3 has none; export suites no longer exist in OpenSSL 3, on either side)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("aNULL:eNULL:@SECLEVEL=0")
        return ctx

    def tls(self) -> None:
        """Every TLS endpoint: the chain verifies against the site's trust anchor for the
        host's name with TLS 1.2 or newer; TLS 1.0 and 1.1, anonymous and NULL suites are
        refused (old_tls_control shows this client offers them)."""
        # verify names them (verify.tls_endpoints: the site's public ports, how TLS starts)
        for label, host, port, how in self.job.get("tls_endpoints", ()):
            def good(host=host, port=port, how=how) -> tuple[bool, str]:
                version, cipher = self.handshake(host, port, how, self.ctx, host)
                return version in ("TLSv1.2", "TLSv1.3"), f"negotiated {version} {cipher}"

            self.run(f"{label}: the certificate verifies against the site's trust anchor for "
                     f"{host}, TLS 1.2 or newer", good)
            self.run(f"{label}: TLS 1.0 and 1.1 refused", self.refused, host, port, how,
                     self.old_tls_context())
            self.run(f"{label}: anonymous and NULL cipher suites refused", self.refused, host,
                     port, how, self.weak_cipher_context())

    def old_tls_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        return ctx

    @staticmethod
    def local_handshake(port: int, server_args: list[str],
                        ctx: ssl.SSLContext) -> tuple[str | None, str]:
        """(TLS version, cipher name) of a handshake with a local ``openssl s_server`` on
        ``port`` started with ``server_args``."""
        server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
                                   *server_args, "-quiet"], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
                    ctx.wrap_socket(raw) as tls:
                cipher = tls.cipher()
                return tls.version(), cipher[0] if cipher else ""
        finally:
            server.kill()

    def old_tls_control(self) -> None:
        """Show that this client can speak TLS 1.1 and offer anonymous suites at all, or the
        refusals of the ``tls`` part prove nothing."""
        cert, key = "/tmp/mailstack-control.crt", "/tmp/mailstack-control.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=control", "-keyout", key, "-out", cert],
                       capture_output=True, check=True)

        def old() -> tuple[bool, str]:
            version, _ = self.local_handshake(
                14433, ["-cert", cert, "-key", key, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
                self.old_tls_context())
            return version == "TLSv1.1", f"negotiated {version}"

        def anonymous() -> tuple[bool, str]:
            # a server that has no certificate at all
            _, name = self.local_handshake(
                14434, ["-nocert", "-tls1_2", "-cipher", "aNULL:@SECLEVEL=0"],
                self.weak_cipher_context())
            return "ADH" in name or "AECDH" in name, f"negotiated {name}"

        self.run("control: this client does complete a TLS 1.1 handshake (with a local "
                 "server), so the refusals are the server's", old)
        self.run("control: this client does complete an anonymous handshake (with a local "
                 "server), so the refusals are the server's", anonymous)

    def ldap(self) -> None:
        """From the client: slapd is closed to the network, or demands TLS for everything."""
        job = self.job["ldap"]
        if not job["network"]:
            for port in (389, 636):
                self.run(f"LDAP: port {port} is closed to the network (slapd listens on its "
                         "ldapi socket only)", self.port_closed, port)
            return
        import ldap3

        plain = ldap3.Server(self.host, port=389, get_info=ldap3.NONE, connect_timeout=TIMEOUT)

        def no_plain() -> tuple[bool, str]:
            c = ldap3.Connection(plain, receive_timeout=TIMEOUT, raise_exceptions=False)
            c.open()
            c.search(job["people"], "(objectClass=*)", attributes=["objectClass"])
            return (c.result["result"] == 13 and not c.entries,
                    f"a search over plain LDAP answered {c.result['description']} with "
                    f"{len(c.entries)} entries")

        self.run("LDAP: port 389 refuses every operation without TLS (confidentiality "
                 "required)", no_plain)
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_data=self.job.get("site_ca") or self.job["ca"])
        self.directory(ldap3.Server(self.host, port=389, tls=tls, get_info=ldap3.NONE,
                                    connect_timeout=TIMEOUT), starttls=True,
                       label="LDAP over StartTLS")

    def ldap_local(self) -> None:
        """On the directory's host, over its ldapi socket (run by verify over SSH)."""
        import ldap3

        self.directory(ldap3.Server(f"ldapi://{self.job['ldap']['socket']}"), starttls=False,
                       label="LDAP", root=True)

    def context(self) -> None:
        """On a host with slapd (run by verify over SSH): where its tree stands (contextCSN),
        for the check that a replica holds the provider's tree."""
        import ldap3

        c = ldap3.Connection(ldap3.Server(f"ldapi://{self.job['ldap']['socket']}"),
                             authentication=ldap3.SASL, sasl_mechanism=ldap3.EXTERNAL,
                             sasl_credentials="", receive_timeout=TIMEOUT, raise_exceptions=False)
        if not c.bind():
            self.result("the directory's contextCSN", False, f"SASL EXTERNAL bind as root "
                                                             f"failed: {c.result['description']}")
            return
        c.search(self.job["ldap"]["base"], "(objectClass=*)", search_scope=ldap3.BASE,
                 attributes=["contextCSN"])
        values = [str(v) for e in c.entries for v in e["contextCSN"].values] if c.entries else []
        self.results.append({"name": "the directory's contextCSN", "ok": True, "detail": "",
                             "csn": max(values, default="")})

    def path(self) -> None:
        """With several mail hosts: a message handed to one host (port 25, from outside) for
        an account homed at another arrives at its home once, through the relay."""
        if not self.job.get("writes", True):
            return  # mails an account: only with --allow-writes against real servers
        for case in self.job.get("path", []):
            token = self.new_token()
            via, home, rcpt = case["via"], case["home"], case["rcpt"]

            def send(case: dict = case, token: str = token) -> tuple[bool, str]:
                with smtplib.SMTP(case["via"], 25, timeout=TIMEOUT) as s:
                    s.ehlo("client.verify.mailstack.invalid")
                    s.starttls(context=self.ctx)
                    s.ehlo("client.verify.mailstack.invalid")
                    refused = s.send_message(self.message("sender@outside.example.net",
                                                          case["rcpt"], token),
                                             "sender@outside.example.net", [case["rcpt"]])
                return not refused, f"refused: {refused}"

            if not self.run(f"port 25 of {via}: a message to {rcpt} (home {home}) is "
                            "accepted", send):
                continue
            self.run(f"{rcpt}: the message handed to {via} arrives at {home} once, through "
                     f"{' -> '.join(case['hops'])}", self.arrived_through, case, token)

    def arrived_through(self, case: dict, token: str) -> tuple[bool, str]:
        deadline, found = time.monotonic() + 60, list[bytes]()
        while time.monotonic() < deadline:
            conn = imaplib.IMAP4_SSL(case["home"], 993, ssl_context=self.ctx, timeout=TIMEOUT)
            try:
                conn.login(case["rcpt"], case["password"])
                conn.select("INBOX", readonly=True)
                _, data = conn.search(None, "SUBJECT", f'"{token}"')
                found = []
                for num in data[0].split():
                    _, parts = conn.fetch(num, "(BODY.PEEK[HEADER])")
                    found += [bytes(p[1]) for p in parts if isinstance(p, tuple)]
            finally:
                with contextlib.suppress(Exception):
                    conn.logout()
            if found:
                time.sleep(1)  # a second copy would show too
                break
            time.sleep(0.5)
        if len(found) != 1:
            return False, f"{len(found)} copies at {case['home']} after 60 s"
        by = received_by(found[0].decode("utf-8", "replace"))
        return by == case["hops"], f"it came through {' -> '.join(by)}"

    def port_closed(self, port: int) -> tuple[bool, str]:
        try:
            with socket.create_connection((self.host, port), timeout=5):
                return False, f"a TCP connection to port {port} was accepted"
        except ConnectionRefusedError:
            return True, ""
        except OSError as err:  # filtered: nothing answers either
            return True, str(err)

    def directory(self, server, *, starttls: bool, label: str, root: bool = False) -> None:
        """The ACL seen by each kind of client: nobody, the services, the users, root."""
        import ldap3

        job = self.job["ldap"]

        def conn(dn: str | None = None, pw: str | None = None) -> ldap3.Connection:
            c = ldap3.Connection(server, user=dn, password=pw, receive_timeout=TIMEOUT,
                                 raise_exceptions=False)
            c.open()
            if starttls:
                c.start_tls()
            if dn and not c.bind():
                raise RuntimeError(f"bind as {dn} failed: {c.result['description']}")
            return c

        def as_root() -> ldap3.Connection:
            c = ldap3.Connection(server, authentication=ldap3.SASL,
                                 sasl_mechanism=ldap3.EXTERNAL, sasl_credentials="",
                                 receive_timeout=TIMEOUT, raise_exceptions=False)
            if not c.bind():
                raise RuntimeError(f"SASL EXTERNAL bind as root failed: "
                                   f"{c.result['description']}")
            return c

        def anonymous() -> tuple[bool, str]:
            c = ldap3.Connection(server, receive_timeout=TIMEOUT, raise_exceptions=False)
            c.open()  # no bind operation at all
            if starttls:
                c.start_tls()
            c.search(job["base"], "(objectClass=*)", attributes=["*"])
            return not c.entries, f"an unbound search returned {len(c.entries)} entries"

        def control() -> tuple[bool, str]:
            if root:
                c = as_root()
            else:
                svc = job["services"][0]
                c = conn(svc["dn"], svc["pw"])
            c.search(job["people"], "(objectClass=*)", attributes=["objectClass"])
            return len(c.entries) > 0, "the control found no entries either: the probe is blind"

        self.run(f"{label}: a search sent without any bind returns nothing", anonymous)
        self.run(f"{label}: the same search as {'root' if root else job['services'][0]['name']}"
                 " finds entries (control)", control)
        writes = self.job.get("writes", True)
        for svc in job["services"]:
            def reads(svc=svc) -> tuple[bool, str]:
                c = conn(svc["dn"], svc["pw"])
                missing = []
                for base, flt, attrs, expect in svc["lookups"]:
                    c.search(base, flt, attributes=attrs)
                    got = {str(v) for e in c.entries for a in attrs for v in e[a].values}
                    if not set(expect) <= got:
                        missing.append(f"{flt} under {base}: got {sorted(got)}, want {expect}")
                return not missing, "; ".join(missing)

            def cannot_write(svc=svc) -> tuple[bool, str]:
                c = conn(svc["dn"], svc["pw"])
                target = job["write_target"]
                c.modify(target, {"description": [(ldap3.MODIFY_ADD, [self.token("ldap")])]})
                return c.result["result"] != 0, f"modify of {target} answered {c.result}"

            def no_passwords(svc=svc) -> tuple[bool, str]:
                c = conn(svc["dn"], svc["pw"])
                c.search(job["people"], "(objectClass=*)", attributes=["userPassword"])
                leaked = [e.entry_dn for e in c.entries if e["userPassword"].values]
                return not leaked, f"reads userPassword of {leaked}"

            self.run(f"{label}: {svc['name']} reads what its lookups use", reads)
            if writes and job.get("write_target"):  # would write if the ACL let it
                self.run(f"{label}: {svc['name']} cannot write", cannot_write)
            self.run(f"{label}: {svc['name']} cannot read userPassword", no_passwords)
        users = job["users"]
        if len(users) >= 2:
            def other_password() -> tuple[bool, str]:
                c = conn(users[0]["dn"], users[0]["pw"])
                c.search(users[1]["dn"], "(objectClass=*)", search_scope=ldap3.BASE,
                         attributes=["userPassword"])
                leaked = [e for e in c.entries if e["userPassword"].values]
                return not leaked, f"{users[0]['dn']} reads the userPassword of {users[1]['dn']}"

            self.run(f"{label}: a user cannot read another user's userPassword", other_password)

        def root_writes() -> tuple[bool, str]:
            """Adds one description value to the probe's entry and removes that value only."""
            c = as_root()
            target, value = job["write_target"], self.token("ldap")
            c.modify(target, {"description": [(ldap3.MODIFY_ADD, [value])]})
            answer = dict(c.result)
            c.search(target, "(objectClass=*)", search_scope=ldap3.BASE,
                     attributes=["description"])
            seen = bool(c.entries) and value in c.entries[0]["description"].values
            c.modify(target, {"description": [(ldap3.MODIFY_DELETE, [value])]})
            return answer["result"] == 0 and seen and c.result["result"] == 0, (
                f"modify answered {answer['description']}, value seen: {seen}, "
                f"removal answered {c.result['description']}")

        if root and writes and job.get("write_target"):
            self.run(f"{label}: root over ldapi can write (the probe account's entry)",
                     root_writes)

    def audit(self) -> None:
        """Append a message with the job's Message-ID to an account's INBOX, set \\Deleted and
        expunge it over IMAP; verify then looks for the audit lines on the host."""
        if not self.job.get("writes", True) or not self.job.get("audit"):
            return
        job = self.job["audit"]
        acc = next(a for a in self.writable() if a["mail"] == job["user"])

        def delete() -> tuple[bool, str]:
            conn = imaplib.IMAP4_SSL(self.host, 993, ssl_context=self.ctx, timeout=TIMEOUT)
            try:
                conn.login(acc["mail"], acc["password"])
                text = (f"From: verify@{self.host}\r\nTo: {acc['mail']}\r\nSubject: "
                        f"mailstack verify audit\r\nMessage-ID: {job['msgid']}\r\n\r\n"
                        "deleted at once by mailstack verify\r\n")
                conn.append(job["folder"], None, None, text.encode())
                conn.select(job["folder"])
                _, data = conn.search(None, "HEADER", "Message-ID", job["msgid"])
                nums = data[0].split()
                for num in nums:
                    conn.store(num, "+FLAGS", "\\Deleted")
                conn.expunge()
                return len(nums) == 1, f"{len(nums)} messages with {job['msgid']} found"
            finally:
                with contextlib.suppress(Exception):
                    conn.logout()

        self.run(f"audit: {acc['mail']} deletes a message over IMAP", delete)

    # -- folders: the tree every login shows, shared folders and their rights ---------------

    def imap_login(self, acc: dict) -> imaplib.IMAP4_SSL:
        conn = imaplib.IMAP4_SSL(self.host, 993, ssl_context=self.ctx, timeout=TIMEOUT)
        conn.login(acc["mail"], acc["password"])
        return conn

    @staticmethod
    def listed(conn: imaplib.IMAP4, pattern: str, special: bool = False) -> dict[str, set[str]]:
        """LIST "" PATTERN [RETURN (SPECIAL-USE)]: IMAP name -> its attributes."""
        typ, data = conn.list('""', f'"{pattern}"' + (" RETURN (SPECIAL-USE)" if special
                                                      else ""))
        if typ != "OK":
            raise imaplib.IMAP4.error(f"LIST: {typ} {data}")
        out: dict[str, set[str]] = {}
        for line in data:
            if not isinstance(line, bytes):
                continue
            m = re.match(rb'\(([^)]*)\) (?:"[^"]*"|NIL) (.+)', line)
            if m:
                name = m.group(2).decode()
                if name.startswith('"') and name.endswith('"'):
                    name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                out[name] = set(m.group(1).decode().split())
        return out

    def folders(self) -> None:
        """Each (writable) account's login shows every special-use folder of the site's tree,
        with its name as a client sees it (modified UTF-7) and its role."""
        want: dict[str, str] = self.job.get("special_use") or {}
        for acc in [a for a in self.writable() if self.may(a, "imap")]:
            def tree(acc=acc) -> tuple[bool, str]:
                conn = self.imap_login(acc)
                try:
                    got = self.listed(conn, "*", special=True)
                finally:
                    with contextlib.suppress(Exception):
                        conn.logout()
                missing = [f"{name} {use}" for name, use in want.items()
                           if use not in got.get(name, set())]
                return not missing, (f"LIST RETURN (SPECIAL-USE) lacks {', '.join(missing)}; "
                                     f"it listed {sorted((n, sorted(f)) for n, f in got.items())}")
            self.run(f"{acc['mail']}: a login shows the special-use folders "
                     f"({', '.join(f'{n} {u}' for n, u in want.items())})", tree)

    def shared(self) -> None:
        """Shared folders: who has rights sees them with exactly those rights (MYRIGHTS, group
        rights added up: a user in two groups has both); who has none does not see them. In
        the lab also: a member who may file APPENDs; a read-only member can SELECT and FETCH,
        APPEND is refused with NO [NOPERM], his STORE \\Deleted and EXPUNGE change nothing
        (Dovecot answers OK and ignores what the rights do not allow)."""
        lab = bool(self.job.get("writes")) and self.job.get("write_accounts") is None
        accounts = [a for a in self.writable() if self.may(a, "imap")]
        for folder, rights in (self.job.get("shared") or {}).items():
            order = sorted(accounts, key=lambda a: "i" not in rights.get(a["mail"].lower(), ""))
            filed: list[str] = []
            for acc in order:
                have = rights.get(acc["mail"].lower(), "")
                self.run(f"{acc['mail']}: {folder} " + (f"has the rights {have} (MYRIGHTS)"
                                                        if have else "is not listed"),
                         self.shared_rights, acc, folder, have)
                if lab and "i" in have:
                    token = uuid.uuid4().hex
                    if self.run(f"{acc['mail']}: APPEND into {folder} is accepted",
                                self.shared_append, acc, folder, token, True):
                        filed.append(token)
                elif lab and "r" in have and filed:
                    self.run(f"{acc['mail']}: may read {folder} but APPEND is refused (NO "
                             "[NOPERM]) and STORE \\Deleted, EXPUNGE remove nothing",
                             self.shared_read_only, acc, folder)
            cleaner = next((a for a in accounts if {"t", "e"} <= set(rights.get(
                a["mail"].lower(), ""))), None)
            if filed and cleaner:
                self.run(f"verify removed what it filed into {folder}",
                         self.shared_remove, cleaner, folder, filed)

    def shared_rights(self, acc: dict, folder: str, want: str) -> tuple[bool, str]:
        conn = self.imap_login(acc)
        try:
            seen = self.listed(conn, folder)
            if not want:
                return folder not in seen, f"LIST shows {folder} to an account without rights"
            if folder not in seen:
                return False, f"LIST does not show {folder}"
            typ, data = conn.myrights(f'"{folder}"')
            got = data[0].decode().rsplit(" ", 1)[-1] if typ == "OK" and data[0] else ""
            # Dovecot adds RFC 4314's obsolete c and d to what k and e/t give
            return set(got) - {"c", "d"} == set(want), \
                f"MYRIGHTS {folder}: {typ} {got!r}, expected {want!r}"
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def shared_append(self, acc: dict, folder: str, token: str,
                      expect_ok: bool) -> tuple[bool, str]:
        conn = self.imap_login(acc)
        try:
            msg = self.message(acc["mail"], acc["mail"], token)
            typ, data = conn.append(f'"{folder}"', None, None, msg.as_bytes())
            return (typ == "OK") == expect_ok, f"APPEND {folder}: {typ} {data}"
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def shared_read_only(self, acc: dict, folder: str) -> tuple[bool, str]:
        conn = self.imap_login(acc)
        try:
            typ, data = conn.select(f'"{folder}"')
            if typ != "OK" or not data[0] or int(data[0]) == 0:
                return False, f"SELECT {folder}: {typ} {data} (expected messages to read)"
            count = int(data[0])
            typ, body = conn.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            if typ != "OK":
                return False, f"FETCH 1: {typ} {body}"
            typ, answer = conn.append(f'"{folder}"', None, None,
                                      self.message(acc["mail"], acc["mail"], "ro").as_bytes())
            if typ == "OK" or b"NOPERM" not in b" ".join(d for d in answer if d):
                return False, f"APPEND by a reader: {typ} {answer}, expected NO [NOPERM]"
            conn.store("1", "+FLAGS", "\\Deleted")
            conn.expunge()
            conn.close()
            typ, data = conn.select(f'"{folder}"', readonly=True)
            after = int(data[0]) if typ == "OK" and data[0] else -1
            _, flags = conn.fetch("1", "(FLAGS)")
            deleted = b"\\Deleted" in b" ".join(f for f in flags if isinstance(f, bytes))
            return after == count and not deleted, \
                f"after STORE \\Deleted and EXPUNGE by a reader: {after} of {count} messages " \
                f"left, message 1 {'marked' if deleted else 'not marked'} \\Deleted"
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def shared_remove(self, acc: dict, folder: str, tokens: list[str]) -> tuple[bool, str]:
        conn = self.imap_login(acc)
        try:
            conn.select(f'"{folder}"')
            for token in tokens:
                _, data = conn.search(None, "SUBJECT", f'"{token}"')
                for num in data[0].split():
                    conn.store(num, "+FLAGS", "\\Deleted")
            typ, data = conn.expunge()
            return typ == "OK", f"EXPUNGE: {typ} {data}"
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    # -- Sieve --------------------------------------------------------------------------

    def sieve(self) -> None:
        """ManageSieve on 4190: no SASL mechanism before STARTTLS; a rule uploaded and activated
        over it files a message (the probe account), and the account's scripts are put back."""
        job = self.job.get("sieve", {})
        if not job.get("managesieve"):
            self.run("ManageSieve: port 4190 is closed (sieve.managesieve: false)",
                     self.port_closed, SIEVE_PORT)
            return

        def sasl(capabilities: list[bytes]) -> str | None:
            for line in capabilities:
                m = re.match(rb'"SASL"(?: "([^"]*)")?$', line)
                if m:
                    return (m.group(1) or b"").decode()
            return None

        def before_tls() -> tuple[bool, str]:
            # the capabilities only, no AUTHENTICATE: a refused plaintext login is a failure
            # fail2ban's dovecot filter counts ("tried to use disallowed plaintext auth")
            sieve = ManageSieve(self.host, self.ctx)
            try:
                caps = b" ".join(sieve.capabilities).decode(errors="replace")
                if b'"STARTTLS"' not in sieve.capabilities:
                    return False, f"no STARTTLS offered: {caps}"
                before = sasl(sieve.capabilities)
                sieve.starttls()
                after = sasl(sieve.capabilities)
            finally:
                sieve.logout()
            return (not before and bool(after) and "PLAIN" in (after or "").split(),
                    f"SASL mechanisms before STARTTLS: {before!r}, after: {after!r}")

        self.run("ManageSieve 4190: no login before STARTTLS (no SASL mechanism offered)",
                 before_tls)
        if not self.job.get("writes", True):
            return  # uploads a rule and mails the probe account: --allow-writes only
        acc = next((a for a in self.writable() if self.may(a, "sieve") and self.may(a, "imap")),
                   None)
        if acc is None:
            self.result("ManageSieve: an account to upload a rule for", False,
                        "no writable account may use both sieve and imap")
            return
        self.run(f"ManageSieve: a rule uploaded for {acc['mail']} files a message into its "
                 "folder", self.sieve_rule, acc)

    def sieve_rule(self, acc: dict) -> tuple[bool, str]:
        user, pw = acc["mail"], acc["password"]
        token = self.new_token()
        folder = f"verify-{token[:12]}"
        script = ('require ["fileinto", "mailbox"];\n'
                  f'if header :contains "subject" "{token}" {{\n'
                  f'  fileinto :create "{folder}";\n  stop;\n}}\n')
        sieve = ManageSieve(self.host, self.ctx)
        sieve.starttls()
        sieve.authenticate(user, pw)
        before = sieve.scripts()
        active = next((name for name, on in before.items() if on), None)
        try:
            sieve.put(VERIFY_SCRIPT, script)
            sieve.command(b"SETACTIVE", sieve.quoted(VERIFY_SCRIPT))
            ok, detail = self.send(25, "sender@outside.example.net", user, token)
            if ok:
                ok, detail = self.wait_in_folder(user, pw, folder, token)
        finally:
            # the account's scripts as they were: its active one again, ours gone
            sieve.command(b"SETACTIVE", sieve.quoted(active or ""))
            if VERIFY_SCRIPT not in before:
                sieve.command(b"DELETESCRIPT", sieve.quoted(VERIFY_SCRIPT))
            after = sieve.scripts()
            sieve.logout()
            self.drop_folder(user, pw, folder)
        if after != before:
            return False, f"scripts before {before}, after {after}"
        return ok, detail

    def wait_in_folder(self, user: str, pw: str, folder: str, token: str) -> tuple[bool, str]:
        deadline, where = time.monotonic() + 30, ""
        while time.monotonic() < deadline:
            conn = imaplib.IMAP4_SSL(self.host, 993, ssl_context=self.ctx, timeout=TIMEOUT)
            try:
                conn.login(user, pw)
                for box in (folder, "INBOX"):
                    status, _ = conn.select(f'"{box}"', readonly=True)
                    if status != "OK":
                        continue
                    _, data = conn.search(None, "SUBJECT", f'"{token}"')
                    if data[0].split():
                        if box == folder:
                            return True, ""
                        where = box
            finally:
                with contextlib.suppress(Exception):
                    conn.logout()
            if where:
                break
            time.sleep(0.5)
        return False, (f"the message landed in {where}, not in {folder}" if where else
                       f"the message never reached {folder} within 30 s")

    def drop_folder(self, user: str, pw: str, folder: str) -> None:
        conn = imaplib.IMAP4_SSL(self.host, 993, ssl_context=self.ctx, timeout=TIMEOUT)
        try:
            conn.login(user, pw)
            conn.delete(f'"{folder}"')
            # a message the rule missed went to INBOX: removed like every message verify sent
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def token(self, what: str) -> str:
        return f"mailstack verify {what} {uuid.uuid4().hex}"


    # -- client settings served by the mail host (clients.serve) ----------------------------

    def https(self, name: str, method: str, path: str,
              body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request to ``name`` on 443, its certificate checked against the site's CA
        and the name."""
        conn = http.client.HTTPSConnection(name, 443, context=self.ctx, timeout=TIMEOUT)
        try:
            headers = {"Content-Type": "text/xml; charset=utf-8"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    @staticmethod
    def autoconfig_servers(xml: bytes) -> list[tuple[str, str, int, str]]:
        """(kind, host, port, socket) of each server a config-v1.1.xml names, in its order."""
        root = ET.fromstring(xml)
        out = []
        for el in root.iter():
            if el.tag in ("incomingServer", "outgoingServer"):
                out.append((el.get("type", ""), (el.findtext("hostname") or "").lower(),
                            int(el.findtext("port") or 0), el.findtext("socketType") or ""))
        return out

    @staticmethod
    def autodiscover_servers(xml: bytes) -> list[tuple[str, str, int, str]]:
        root = ET.fromstring(xml)
        out = []
        for el in root.iter():
            if el.tag.rpartition("}")[2] != "Protocol":
                continue
            field = {c.tag.rpartition("}")[2]: (c.text or "") for c in el}
            out.append((field.get("Type", "").lower(), field.get("Server", "").lower(),
                        int(field.get("Port") or 0),
                        "SSL" if field.get("Encryption") == "SSL" else "STARTTLS"))
        return out

    def imap_as_named(self, host: str, port: int, socket_type: str) -> imaplib.IMAP4:
        """An IMAP connection with TLS as a client document names it: from the first byte
        (SSL) or after STARTTLS; the certificate checked against the site's anchor."""
        if socket_type == "SSL":
            return imaplib.IMAP4_SSL(host, port, ssl_context=self.ctx, timeout=TIMEOUT)
        conn = imaplib.IMAP4(host, port, timeout=TIMEOUT)
        conn.starttls(ssl_context=self.ctx)
        return conn

    def smtp_as_named(self, host: str, port: int, socket_type: str) -> smtplib.SMTP:
        """An SMTP connection with TLS as a client document names it, greeted (EHLO)."""
        if socket_type == "SSL":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT, context=self.ctx)
            smtp.ehlo("client.verify.mailstack.invalid")
            return smtp
        smtp = smtplib.SMTP(host, port, timeout=TIMEOUT)
        smtp.ehlo("client.verify.mailstack.invalid")
        smtp.starttls(context=self.ctx)
        smtp.ehlo("client.verify.mailstack.invalid")
        return smtp

    def tls_answer(self, kind: str, host: str, port: int, socket_type: str) -> tuple[bool, str]:
        """Whether a server answers with TLS as named (from the first byte, or after the
        protocol's STARTTLS), with a certificate the site's CA signed for ``host``."""
        try:
            if kind == "imap":
                self.imap_as_named(host, port, socket_type).logout()
            elif kind == "pop3":
                pop = (poplib.POP3_SSL(host, port, context=self.ctx, timeout=TIMEOUT)
                       if socket_type == "SSL" else poplib.POP3(host, port, timeout=TIMEOUT))
                if socket_type != "SSL":
                    pop.stls(context=self.ctx)
                pop.quit()
            else:
                self.smtp_as_named(host, port, socket_type).quit()
        except (OSError, imaplib.IMAP4.error, poplib.error_proto, smtplib.SMTPException) as err:
            return False, f"{type(err).__name__}: {err}"
        return True, ""

    def clients(self) -> None:
        """What mail clients fetch from the mail host, and a client set up from it alone."""
        spec = self.job.get("clients")
        if not spec:
            return
        for domain in spec["domains"]:
            self.client_settings(spec, domain)

    def client_settings(self, spec: dict, domain: str) -> None:
        name = f"autoconfig.{domain}"
        asked = f"verify@{domain}"
        query = "?emailaddress=" + urllib.parse.quote(asked)
        named: list[tuple[str, str, int, str]] = []

        def autoconfig() -> tuple[bool, str]:
            status, _, body = self.https(name, "GET", "/mail/config-v1.1.xml" + query)
            if status != 200:
                return False, f"HTTP {status}: {body[:200]!r}"
            named.extend(self.autoconfig_servers(body))
            candidates = {tuple(c) for c in spec["candidates"]} | set(named)
            answering = set()
            why = []
            for c in sorted(candidates):
                ok, detail = self.tls_answer(*c)
                if ok:
                    answering.add(c)
                elif c in named:
                    why.append(f"{c[0]} {c[1]}:{c[2]} {c[3]}: {detail}")
            missing = sorted(answering - set(named))
            extra = sorted(set(named) - answering)
            if not named or missing or extra:
                return False, ("; ".join(
                    ([f"named but not answering with TLS: {extra}"] if extra else [])
                    + ([f"answering with TLS but not named: {missing}"] if missing else [])
                    + why) or "the document names no server")
            return True, ""

        self.run(f"autoconfig: https://{name}/mail/config-v1.1.xml names exactly the servers "
                 "that answer with TLS", autoconfig)

        def well_known() -> tuple[bool, str]:
            status, _, body = self.https(
                name, "GET", "/.well-known/autoconfig/mail/config-v1.1.xml" + query)
            got = self.autoconfig_servers(body) if status == 200 else []
            return status == 200 and got == named, f"HTTP {status}, servers {got}"

        self.run(f"autoconfig: /.well-known/autoconfig/mail/config-v1.1.xml names the same "
                 f"({domain})", well_known)

        def autodiscover() -> tuple[bool, str]:
            request = (
                '<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="http://schemas.'
                'microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
                f"<EMailAddress>{asked}</EMailAddress><AcceptableResponseSchema>http://schemas."
                "microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
                "</AcceptableResponseSchema></Request></Autodiscover>").encode()
            where = f"autodiscover.{domain}"
            status, _, body = self.https(where, "POST", "/autodiscover/autodiscover.xml",
                                         request)
            if status != 200:
                return False, f"HTTP {status}: {body[:200]!r}"
            got = self.autodiscover_servers(body)
            get_status = self.https(where, "GET", "/autodiscover/autodiscover.xml")[0]
            if get_status != 405:
                return False, f"a GET answered {get_status}, not 405 (Outlook POSTs)"
            return got == named, f"Autodiscover names {got}, autoconfig {named}"

        self.run(f"Autodiscover: a POST to https://autodiscover.{domain}/autodiscover/"
                 "autodiscover.xml names the same servers", autodiscover)

        def profile() -> tuple[bool, str]:
            status, headers, body = self.https(name, "GET", "/mobileconfig" + query)
            if status != 200:
                return False, f"HTTP {status}: {body[:200]!r}"
            if headers.get("content-type") != "application/x-apple-aspen-config":
                return False, f"Content-Type {headers.get('content-type')}"
            data = plistlib.loads(body)
            mail = next(p for p in data["PayloadContent"]
                        if p["PayloadType"] == "com.apple.mail.managed")
            imap = next(s for s in named if s[0] == "imap")
            smtp = next(s for s in named if s[0] == "smtp")
            got = [(mail["IncomingMailServerHostName"].lower(),
                    mail["IncomingMailServerPortNumber"]),
                   (mail["OutgoingMailServerHostName"].lower(),
                    mail["OutgoingMailServerPortNumber"])]
            want = [(imap[1], imap[2]), (smtp[1], smtp[2])]
            roots = [p for p in data["PayloadContent"]
                     if p["PayloadType"] == "com.apple.security.root"]
            if bool(roots) != spec["internal_ca"]:
                return False, (f"{len(roots)} root certificate payloads; the site "
                               f"{'has' if spec['internal_ca'] else 'has no'} CA of its own")
            return (got == want and mail["EmailAddress"] == asked,
                    f"the profile names {got} for {mail['EmailAddress']}, autoconfig {want}")

        self.run(f"mobileconfig: a profile for {asked} names the same IMAP and SMTP servers",
                 profile)
        acc = next((a for a in self.writable() if a["mail"].lower().endswith("@" + domain)
                    and self.may(a, "imap") and self.may(a, "submission")), None)
        if not self.job.get("writes") or acc is None or not named:
            return
        self.run(f"a client set up from autoconfig alone logs in over IMAP and sends over "
                 f"submission ({acc['mail']})", self.configured_client, acc, named)

    def configured_client(self, acc: dict, named: list) -> tuple[bool, str]:
        """Log in and send as a mail client does that knows only the autoconfig document: its
        first incoming IMAP server and first outgoing server, the user name its template
        gives."""
        user, pw = acc["mail"], acc["password"]
        _, ihost, iport, isock = next(s for s in named if s[0] == "imap")
        _, shost, sport, ssock = next(s for s in named if s[0] == "smtp")
        token = self.new_token()
        with self.smtp_as_named(shost, sport, ssock) as smtp:
            smtp.login(user, pw)
            refused = smtp.send_message(self.message(user, user, token), user, [user])
        if refused:
            return False, f"{shost}:{sport} refused {refused}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            conn = self.imap_as_named(ihost, iport, isock)
            try:
                conn.login(user, pw)
                conn.select("INBOX", readonly=True)
                _, data = conn.search(None, "SUBJECT", f'"{token}"')
                if data[0].split():
                    return True, ""
            finally:
                with contextlib.suppress(Exception):
                    conn.logout()
            time.sleep(0.5)
        return False, (f"sent over {shost}:{sport} {ssock}, not in INBOX at {ihost}:{iport} "
                       "within 30 s")

def received_by(header: str) -> list[str]:
    """The hosts that took a message, first to last: its Received headers' "by" (a host's
    own hand-over to its Dovecot counts once)."""
    unfolded = header.replace("\r\n", "\n").replace("\n\t", " ").replace("\n ", " ")
    by = [m.group(1).lower() for m in re.finditer(r"^Received: .*?\bby (\S+)", unfolded,
                                                   re.M)][::-1]
    return [host for i, host in enumerate(by) if i == 0 or by[i - 1] != host]


def pin_address(pins: dict[str, str]) -> None:
    """Resolve the servers' names to the inventory's addresses (TLS still checks the name)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real(pins.get(host, host), *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def main() -> int:
    return run_job(sys.stdin.read())


def run_job(text: str) -> int:
    job = json.loads(text)
    if job.get("address"):
        pin_address({job["hostname"]: job["address"], **job.get("pins", {})})
    probe = Probe(job)
    for part in job.get("parts", ["delivery", "submission", "port25", "plaintext", "tls", "sieve",
                                  "old_tls_control", "access", "ldap", "lists", "folders",
                                  "shared", "audit", "clients"]):
        try:
            getattr(probe, part)()
        except Exception as err:
            probe.result(f"probe {part}", False, f"{type(err).__name__}: {err}")
    if job.get("cleanup") and probe.sent:
        probe.run("verify removed the messages it sent from the probe account's INBOX",
                  probe.cleanup)
    json.dump(probe.results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
