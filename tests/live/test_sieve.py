"""Sieve live, on the office lab (tests/live/conftest.py):

* verify's ``sieve`` part: ManageSieve on 4190 offers no login before STARTTLS; a rule
  uploaded and activated over it for the probe account files a message into its folder, and the
  account's scripts are put back; ``access``: olga (no ``sieve`` in her protocols) is refused;
* the site's spam rule files a message marked ``X-Spam-Flag: YES`` into Junk;
* the shared folder's address files into the shared folder, and a detail address
  (``invoices+Other@``) lands there too: a sender cannot choose the folder;
* a vacation from the site file answers each outside sender once (the reply reaches the
  head-office relay's stand-in); a broken ``sieve.before`` is refused by apply's staged check
  (sievec) and the running configuration stays;
* broken deployments: the sieve plugin removed from LMTP, ManageSieve off, a compiled script
  removed: the checks FAIL; ``apply`` (or sievec) puts them back.
"""

from __future__ import annotations

import time
import uuid

import pytest

from mailstack import apply as apply_mod
from mailstack import secrets, verify
from mailstack.lab.stand_ins import StandIns
from mailstack.plan import layout, sieve
from tests.conftest import live

pytestmark = live(ssh=True, ansible=True)

IVAN, OLGA = "ivan@krasnoyarsk.example.org", "olga@krasnoyarsk.example.org"
INVOICES = "invoices@krasnoyarsk.example.org"
CONF = "/etc/dovecot/dovecot.conf"
RULE = "ManageSieve: a rule uploaded for "   # ... the first account verify may mail (lab: ivan)
BEFORE_TLS = "ManageSieve 4190: no login before STARTTLS (no SASL mechanism offered)"
COMPILED = "test_sieve_scripts_are_compiled_where_dovecot_reads_them"  # the keyword (pytest -k)
COMPILED_CHECK = "host: sieve scripts are compiled where dovecot reads them"

# Sends each message of the job on port 25 from the lab's client (STARTTLS), as an outside sender.
SEND = r"""
import json, smtplib, ssl, sys
from email.message import EmailMessage
job = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cadata=job["ca"])
out = []
for m in job["messages"]:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = m["from"], m["to"], m["subject"]
    msg["Message-ID"] = "<%s@outside.example.net>" % m["id"]
    for k, v in m.get("headers", {}).items():
        msg[k] = v
    msg.set_content("sieve test\n")
    with smtplib.SMTP(job["host"], 25, timeout=30) as s:
        s.ehlo("client.example.net"); s.starttls(context=ctx); s.ehlo("client.example.net")
        out.append(s.send_message(msg, m["from"], [m["rcpt"]]) == {})
print(json.dumps(out))
"""


def _send(office, *messages: dict) -> None:
    ca = secrets.SecretStore(office.root / "secrets").read(layout.SECRET_CA_CERT)
    assert office.client_run(SEND, ca=ca, messages=list(messages)) == [True] * len(messages)


def _rule(checks: dict[str, verify.Check]) -> verify.Check:
    return next(c for name, c in checks.items() if name.startswith(RULE))


def _message(rcpt: str, token: str, sender: str = "someone@outside.example.net",
             to: str | None = None, **headers: str) -> dict:
    return {"from": sender, "rcpt": rcpt, "to": to or rcpt, "subject": f"sieve {token}",
            "id": token, "headers": headers}


def _files_with(office, token: str, seconds: float = 30) -> list[str]:
    """The messages (Maildir files) on the host that carry ``token`` (waits for one)."""
    deadline = time.monotonic() + seconds
    while True:
        found = [p for p in office.sh(f"grep -rlF -- {token} /var/vmail || true").split()
                 if p.rsplit("/", 2)[1] in ("new", "cur")]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_managesieve_needs_tls_and_an_uploaded_rule_files_a_message(office_lab) -> None:
    checks = office_lab.checks(["sieve", "access"])
    assert {n: c.detail for n, c in checks.items() if not c.ok} == {}
    assert _rule(checks).ok
    for name in (BEFORE_TLS, f"{OLGA}: sieve refuses its login (not in its protocols)",
                 f"{OLGA}: imap accepts its login (control)"):
        assert name in checks, sorted(checks)
    # the account's scripts are as before: none stored, none active
    home = "/var/vmail/krasnoyarsk.example.org/ivan"
    assert office_lab.sh(f"find {home}/sieve -name '*.sieve' 2>/dev/null; "
                         f"ls -d {home}/.dovecot.sieve 2>/dev/null; true").split() == []


def test_the_site_s_spam_rule_files_into_junk(office_lab) -> None:
    spam, ham = uuid.uuid4().hex, uuid.uuid4().hex
    _send(office_lab, _message(IVAN, spam, **{"X-Spam-Flag": "YES"}), _message(IVAN, ham))
    home = "/var/vmail/krasnoyarsk.example.org/ivan/Maildir"
    assert [p.rsplit("/", 2)[0] for p in _files_with(office_lab, spam)] == [f"{home}/.Junk"]
    assert [p.rsplit("/", 2)[0] for p in _files_with(office_lab, ham)] == [home]


def _public_namespace(office) -> bool:
    """Until the folders branch renders the public namespace, add a minimal one by hand (and
    say so): True when one was added (the test then puts the configuration back)."""
    if "type = public" in office.sh(f"cat {CONF}"):
        return False
    office.sh(f"cat >> {CONF} <<'EOF'\n"
              "namespace public {\n  type = public\n  separator = /\n  prefix = Public/\n"
              "  location = maildir:/var/vmail/public\n  subscriptions = no\n}\nEOF\n"
              "mkdir -p /var/vmail/public/.Invoices /var/vmail/public/.Other && "
              "chown -R vmail:vmail /var/vmail/public && systemctl reload dovecot && sleep 2")
    return True


def test_the_shared_folder_address_files_there_and_a_sender_cannot_choose(office_lab) -> None:
    added = _public_namespace(office_lab)
    try:
        plain, detail, other = (uuid.uuid4().hex for _ in range(3))
        local, domain = INVOICES.split("@")
        _send(office_lab, _message(INVOICES, plain),
              _message(f"{local}+Other@{domain}", detail),
              _message(f"{local}+Public/Other@{domain}", other))
        for token in (plain, detail, other):
            found = _files_with(office_lab, token)
            assert len(found) == 1 and "/public/" in found[0] and "Invoices" in found[0] \
                and "Other" not in found[0], (token, found)
    finally:
        if added:
            office_lab.apply()  # the hand-made namespace goes, the rendered file comes back


def test_a_vacation_answers_each_sender_once_and_a_broken_before_is_refused(office_lab) -> None:
    site = office_lab.site
    original = site.read_text(encoding="utf-8")
    world = StandIns(office_lab.state)
    subject = f"away {uuid.uuid4().hex[:8]}"
    marker = "    name: Ivan Petrov\n"
    assert marker in original, "the example's ivan changed: adjust this test"
    try:
        site.write_text(original.replace(
            marker, marker + f"    vacation: {{subject: '{subject}', text: 'Back on Monday.', "
                             "days: 1}\n", 1), encoding="utf-8")
        office_lab.apply()
        assert office_lab.host_checks(COMPILED)[COMPILED_CHECK].ok
        first, second = "vac-a@outside.example.net", "vac-b@outside.example.net"
        # the first sender's second message after the first reply: two messages from one
        # sender delivered at the same instant may both be answered (Pigeonhole checks its
        # duplicate record before it sends and writes it after: seen once in CI)
        _send(office_lab, _message(IVAN, uuid.uuid4().hex, sender=first))
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any(
                subject in m and first in m for m in world.relay_messages("head-office")):
            time.sleep(0.5)
        _send(office_lab, _message(IVAN, uuid.uuid4().hex, sender=first),
              _message(IVAN, uuid.uuid4().hex, sender=second))
        deadline, replies = time.monotonic() + 40, {}
        while time.monotonic() < deadline:
            seen = [m for m in world.relay_messages("head-office") if subject in m]
            replies = {who: sum(who in m for m in seen) for who in (first, second)}
            if replies[second] and time.monotonic() > deadline - 30:
                break  # the second sender's reply is there; 10 s more for a stray duplicate
            time.sleep(1)
        assert replies == {first: 1, second: 1}, replies
        log = office_lab.journal("-10min")
        assert f"discarded duplicate vacation response to <{first}>" in log
        # verify's lab-only vacation part passes, and FAILs without the sieve plugin in LMTP
        check = f"vacation of {IVAN}: two messages from one sender get one reply"
        assert office_lab.checks(["vacation"])[check].ok
        office_lab.sh(f"sed -i 's/^  mail_plugins = $mail_plugins sieve$/  mail_plugins = "
                      f"$mail_plugins/' {CONF} && systemctl reload dovecot && sleep 2")
        broken = office_lab.checks(["vacation"])[check]
        assert not broken.ok
        print(f"\n[vacation without the plugin: {broken.detail}]")
        office_lab.sh(f"sed -i 's/^  mail_plugins = $mail_plugins$/  mail_plugins = "
                      f"$mail_plugins sieve/' {CONF} && systemctl reload dovecot && sleep 2")
        assert "sieve" in office_lab.sh("doveconf -h -f protocol=lmtp mail_plugins")

        # a site script that does not compile: the staged check refuses it before the swap
        site.write_text(original + "  before: |\n    require \"fileinto\";\n    fileinto \"X\"\n",
                        encoding="utf-8")
        live_before = office_lab.sh(f"cat {CONF}")
        with pytest.raises(apply_mod.ApplyFailed) as refused:
            apply_mod.apply(site, inventory=office_lab.state.inventory,
                            build_dir=office_lab.build, out=lambda line: None)
        text = str(refused.value)
        assert "20-site: line 3: error" in text and "failed to compile sieve script" in text \
            and "the running Dovecot keeps its previous configuration" in text, text[-2000:]
        assert office_lab.sh(f"cat {CONF}") == live_before
        assert not office_lab.sh(f"ls {sieve.SITE_SCRIPT} 2>/dev/null || true").strip()
    finally:
        site.write_text(original, encoding="utf-8")
        office_lab.apply()
    assert not office_lab.sh(f"ls {sieve.account_script(IVAN)} 2>/dev/null || true").strip()


def test_broken_sieve_deployments_fail_their_checks(office_lab) -> None:
    try:
        # 1. the sieve plugin gone from LMTP: the uploaded rule files nothing
        office_lab.sh(f"sed -i 's/^  mail_plugins = $mail_plugins sieve$/  mail_plugins = "
                      f"$mail_plugins/' {CONF} && systemctl reload dovecot && sleep 2")
        assert "sieve" not in office_lab.sh("doveconf -h -f protocol=lmtp mail_plugins")
        broken = office_lab.checks(["sieve"])
        assert not _rule(broken).ok and broken[BEFORE_TLS].ok, broken
        print(f"\n[no sieve plugin: {_rule(broken).detail}]")
        # 2. ManageSieve off: nothing answers on 4190
        office_lab.sh(f"sed -i 's/^protocols = imap pop3 lmtp sieve$/protocols = imap pop3 "
                      f"lmtp/' {CONF} && systemctl restart dovecot && sleep 2")
        broken = office_lab.checks(["sieve"])
        assert not broken[BEFORE_TLS].ok, broken
        # 3. a compiled site script gone: the host check FAILs
        office_lab.sh(f"rm -f {sieve.SPAM_SCRIPT[:-len('.sieve')]}.svbin")
        broken_check = office_lab.host_checks(COMPILED)[COMPILED_CHECK]
        assert not broken_check.ok
        print(f"\n[binary removed: {broken_check.detail}]")
    finally:
        # dovecot.conf differs: apply stages the directory again, and its check compiles
        office_lab.apply()
    assert office_lab.host_checks(COMPILED)[COMPILED_CHECK].ok
    assert all(c.ok for c in office_lab.checks(["sieve"]).values())


def test_the_filing_account_logs_in_nowhere(office_lab) -> None:
    """invoices@ has no password and every service is disabled: its entry is delivery only."""
    entry = office_lab.sh(f"ldapsearch -LLL -Y EXTERNAL -H ldapi:/// -b "
                          "'ou=people,dc=krasnoyarsk,dc=example,dc=org' "
                          f"'(mail={INVOICES})' mailstackDisabledService 2>/dev/null")
    assert sorted(line.split(": ")[1] for line in entry.splitlines()
                  if line.startswith("mailstackDisabledService")) == \
        ["imap", "pop3", "sieve", "smtp"]
