"""The audit trail, as data: Dovecot's mail_log plugin on every mailbox, a persistent journal.

"Who deleted my mail" needs the deletions (\\Deleted set and taken back), the expunges (the
real removal, also by autoexpunge and by POP3's DELE), the copies (an IMAP MOVE is logged as a
copy into the target and an expunge from the source) and the folders deleted or renamed:
:data:`EVENTS` (Dovecot 2.3's own defaults). Not ``save`` (every Sent copy and draft) nor
``flag_change`` (every \\Seen): noise that buries the answer. Each line names the user (the
log prefix ``imap(user)<pid><session>:``), the folder, the message's UID, Message-ID and size
(:data:`FIELDS`) and nothing of its content: no From, no Subject, so the trail an admin reads
holds no private text. A Message-ID is enough to find the message in a backup.

Dovecot logs through syslog (``log_path = syslog``) into the journal; Debian 12's journald
keeps it in memory only (``Storage=auto`` without /var/log/journal), so a reboot would lose the
trail: :data:`JOURNALD_DROPIN` makes it persistent on every host (base places it; pickup
``journald``: journald restarts and flushes what it held in /run to disk). Its size stays
journald's default (10 % of the file system, at most 4 G): a fixed figure would be too small on
a big disk and too large on a small one.
"""

from __future__ import annotations

from mailstack.plan import FileSpec

PLUGINS = ("mail_log", "notify")
"""Appended to ``mail_plugins`` (mail_log needs notify)."""
EVENTS = ("delete", "undelete", "expunge", "copy", "mailbox_delete", "mailbox_rename")
FIELDS = ("uid", "box", "msgid", "size")
JOURNALD_DROPIN = "/etc/systemd/journald.conf.d/mailstack.conf"
JOURNAL_DIR = "/var/log/journal"
SYSLOG_IDENTIFIER = "dovecot"
"""Dovecot's lines in the journal (``journalctl -t dovecot``)."""


def plugin_settings() -> list[tuple[str, str]]:
    """dovecot.conf's plugin {} settings of mail_log."""
    return [("mail_log_events", " ".join(EVENTS)), ("mail_log_fields", " ".join(FIELDS))]


def files() -> list[FileSpec]:
    """Every host: the journal kept on disk."""
    return [FileSpec(JOURNALD_DROPIN, "_formats/ini.j2", {
        "header": "journald: keep the journal on disk (/var/log/journal), so that Dovecot's "
                  "audit trail (mail_log) outlives a reboot",
        "sections": [("Journal", [("Storage", "persistent")])]})]


def pickup(path: str) -> str:
    return "journald"
