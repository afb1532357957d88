#!/usr/bin/python3
"""Tell an account that its mailbox is nearly full (Dovecot's quota_warning).

Rendered by mailstack to /usr/local/lib/mailstack/quota-warning; python3's standard library only.
Dovecot's quota plugin runs it through the ``quota-warning`` script service (as vmail) when a
delivery or a save crosses the warning level: ``quota-warning PERCENT USER FROM``.

The message goes straight into the account's INBOX with ``dovecot-lda`` and the quota plugin
told not to enforce (``noenforcing``): a warning that the full mailbox itself refused would be
no warning. Its sender is the site's postmaster with ``Auto-Submitted: auto-generated``.
dovecot-lda logs the delivery ("saved mail to INBOX"); only a failure is written to stderr,
which Dovecot logs as an error of the ``quota-warning`` service.
"""

from __future__ import annotations

import email.message
import email.utils
import subprocess
import sys

LDA = "/usr/lib/dovecot/dovecot-lda"
NOENFORCING = "plugin/quota=count:User quota:noenforcing"


def message(percent: str, user: str, sender: str) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = f"Mail server <{sender}>"
    msg["To"] = user
    msg["Subject"] = f"Your mailbox is {percent}% full"
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        f"Your mailbox {user} has reached {percent}% of its size limit.\n\n"
        "When it is full, new messages for you wait at the senders' servers and come back\n"
        "to their senders after a few days. Please delete or archive old messages (and empty\n"
        "the Trash folder), or ask your administrator for a larger mailbox.\n")
    return msg


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: quota-warning PERCENT USER FROM", file=sys.stderr)
        return 64
    percent, user, sender = argv
    msg = message(percent, user, sender)
    proc = subprocess.run([LDA, "-d", user, "-f", sender, "-o", NOENFORCING],
                          input=msg.as_bytes(), capture_output=True, check=False)
    if proc.returncode != 0:
        print(f"quota-warning: {user} at {percent}%: dovecot-lda exited {proc.returncode}: "
              f"{proc.stderr.decode(errors='replace').strip()}", file=sys.stderr)
        return proc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
