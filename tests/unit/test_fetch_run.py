"""fetch-run, the host-side wrapper of getmail6: an oversized message is reported once (journal
and a notice to the account), a delivered one is logged, getmail's exit status is kept. The log
lines are getmail6 6.18.11's, as its message log wrote them in the lab."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

import pytest

from mailstack.data import fetch_run

DELIVERED = ("2026-12-01 02:48:02 msg 2/3 (1042 bytes) msgid 000000026b0e3502 from "
             "<unknown> delivered to MDA_external command sendmail (b'')")
LOG = "".join(line + "\n" for line in (
    "2026-12-01 02:48:02 Initializing SimplePOP3SSLRetriever:shop@provider.example@"
    "pop.provider.example:995:",
    "2026-12-01 02:48:02 msg 1/3 (312071 bytes) msgid 000000016b0e3502 not retrieved "
    "(oversized)",
    DELIVERED,
    "2026-12-01 02:48:02 msg 3/3 (980 bytes) msgid 000000036b0e3502 not retrieved (seen)",
    "2026-12-01 02:48:02   1 messages (1042 bytes) retrieved, 2 skipped",
))


@pytest.fixture
def cfg(tmp_path: Path) -> dict[str, object]:
    state = tmp_path / "state"
    state.mkdir()
    sent = tmp_path / "sent"
    sent.mkdir()
    sendmail = tmp_path / "sendmail"  # records its arguments and the message, like a queue
    sendmail.write_text(f'#!/bin/sh\nn=$(ls {sent} | wc -l)\necho "$@" > {sent}/$n.args\n'
                        f'cat > {sent}/$n.eml\n')
    sendmail.chmod(0o755)
    getmail = tmp_path / "getmail"  # writes the log above and exits as told
    getmail.write_text(f'#!/bin/sh\ncat {tmp_path}/log >> {state}/message.log\n'
                       f'exit $(cat {tmp_path}/rc)\n')
    getmail.chmod(0o755)
    (tmp_path / "log").write_text(LOG)
    (tmp_path / "rc").write_text("0")
    return {"getmail": str(getmail), "sendmail": str(sendmail), "rcfile": "/dev/null",
            "state_dir": str(state), "message_log": str(state / "message.log"),
            "unit": "mailstack-fetch@x.service",
            "label": "pop3 shop@provider.example at pop.provider.example -> ivan@k.example",
            "protocol": "pop3", "user": "shop@provider.example", "host": "pop.provider.example",
            "account": "ivan@k.example", "limit": 283616, "notice_from": "postmaster@k.example"}


def sent(cfg: dict[str, object]) -> list[tuple[str, email.message.EmailMessage]]:
    folder = Path(str(cfg["sendmail"])).parent / "sent"
    out = []
    for eml in sorted(folder.glob("*.eml")):
        msg = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
        out.append((eml.with_suffix(".args").read_text().strip(), msg))
    return out


def test_an_oversized_message_is_reported_once(cfg, capsys) -> None:
    assert fetch_run.run(cfg) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        DELIVERED.split(" ", 2)[2],
        "<4>pop3 shop@provider.example at pop.provider.example -> ivan@k.example: a message of "
        "312071 bytes (msgid 000000016b0e3502) is over the limit of 283616 bytes: left at the "
        "provider, not collected; a notice went to ivan@k.example"]
    ((args, msg),) = sent(cfg)
    assert args == "-i -f <> -- ivan@k.example"
    assert msg["To"] == "ivan@k.example" and msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"] == "A message too large for this server waits at pop.provider.example"
    body = msg.get_content()
    assert "A message of 312,071 bytes in the mailbox shop@provider.example at" in body
    assert "(283,616\nbytes)" in body or "(283,616 bytes)" in body
    assert "It stays at the provider" in body
    state = json.loads(Path(str(cfg["state_dir"]), "oversized.json").read_text())
    assert list(state) == ["000000016b0e3502"] and state["000000016b0e3502"]["size"] == 312071
    # The next runs see it again: nothing more is said or sent.
    assert fetch_run.run(cfg) == 0
    assert fetch_run.run(cfg) == 0
    assert len(sent(cfg)) == 1
    assert "<4>" not in capsys.readouterr().out
    assert Path(str(cfg["message_log"])).read_text() == LOG  # one run's lines only


def test_a_failed_run_forgets_nothing_and_keeps_getmails_status(cfg, capsys) -> None:
    fetch_run.run(cfg)
    log = Path(str(cfg["getmail"])).parent / "log"
    log.write_text(LOG.replace("msg 1/3 (312071 bytes) msgid 000000016b0e3502 not retrieved "
                               "(oversized)\n", ""))
    (log.parent / "rc").write_text("127")
    assert fetch_run.run(cfg) == 127  # a broken run: the message may still be there
    state_file = Path(str(cfg["state_dir"]), "oversized.json")
    assert list(json.loads(state_file.read_text())) == ["000000016b0e3502"]
    (log.parent / "rc").write_text("0")
    assert fetch_run.run(cfg) == 0  # a whole run without it: it left the provider
    assert json.loads(state_file.read_text()) == {}
    assert len(sent(cfg)) == 1


def test_usage(capsys) -> None:
    assert fetch_run.main([]) == 2
    assert capsys.readouterr().err == "usage: fetch-run [--failed] CONFIG\n"
