"""Dovecot's mail_log lines (as 2.3.19 wrote them in the lab image) -> audit entries."""

from __future__ import annotations

from mailstack import audit
from mailstack.plan import audit as audit_plan

P = "imap(anna@x.test)<447><O3EpXZBhSo1/AAAB>: "


def test_delete_expunge_copy_and_folders() -> None:
    got = [audit.parse(P + m, host="mail", time="T") for m in (
        "delete: box=INBOX, uid=1, msgid=<tok1@x.test>, size=46",
        "expunge: box=INBOX, uid=1, msgid=<tok1@x.test>, size=46",
        "copy from INBOX: box=Archive, uid=1, msgid=<tok2@x.test>, size=46",
        "Mailbox renamed: Foo -> Bar",
        "Mailbox deleted: Bar")]
    assert [e and (e.event, e.folder, e.msgid, e.uid) for e in got] == [
        ("delete", "INBOX", "<tok1@x.test>", "1"),
        ("expunge", "INBOX", "<tok1@x.test>", "1"),
        ("copy from INBOX", "Archive", "<tok2@x.test>", "1"),
        ("mailbox renamed", "Foo -> Bar", "", ""),
        ("mailbox deleted", "Bar", "", "")]
    assert got[0] is not None
    assert got[0].line() == "T  mail  imap  delete  INBOX  <tok1@x.test>"


def test_values_with_commas_and_cyrillic_folders() -> None:
    e = audit.parse("pop3(a@x)<9><s>: expunge: box=Отправленные, uid=7, msgid=<a, b=c@x>, "
                    "size=5")
    assert e is not None
    assert (e.service, e.folder, e.msgid, e.size) == ("pop3", "Отправленные", "<a, b=c@x>", "5")


def test_other_lines_are_not_audit_lines() -> None:
    assert audit.parse(P + "Disconnected: Logged out in=339 out=1514 deleted=1") is None
    assert audit.parse("imap-login: Login: user=<anna@x.test>, method=PLAIN") is None


def test_the_user_is_matched_whole() -> None:
    seen = {"lines": [["1796122526460732", "imap(hanna@x.test)<1><s>: expunge: box=INBOX, "
                       "uid=1, msgid=<h@x>, size=1"],
                      ["1796122526460732", "imap(anna@x.test)<2><s>: expunge: box=INBOX, "
                       "uid=2, msgid=<a@x>, size=1"]]}
    found = audit.entries("mail", seen, "anna@x.test")
    assert [(e.user, e.msgid, e.time) for e in found] == [
        ("anna@x.test", "<a@x>", "2026-12-01 10:55:26")]
    assert '"needle": "(anna@x.test)<"' in audit.job("anna@x.test", None)


def test_plugin_settings_name_no_content() -> None:
    settings = dict(audit_plan.plugin_settings())
    assert settings["mail_log_events"].split() == [
        "delete", "undelete", "expunge", "copy", "mailbox_delete", "mailbox_rename"]
    assert not {"from", "subject"} & set(settings["mail_log_fields"].split())
