"""Folders: the rights names of the site file and Dovecot's ACL letters, in one table.

The site file names rights in words (``read``, ``file``, ``admin``); Dovecot's ACL files
(``acl = vfile``) and IMAP ACL (RFC 4314) use letters. :data:`RIGHTS` is the only place that
maps one to the other; ``file`` is the usual "may put mail here" bundle.
"""

from __future__ import annotations

from collections.abc import Iterable

# Dovecot's ACL letters (doc: "ACL letters"): l lookup, r read, w write (flags other than
# \Seen and \Deleted), s seen, t write-deleted, i insert, p post, e expunge, k create,
# x delete, a admin.
RIGHTS: dict[str, str] = {
    "lookup": "l",
    "read": "lrs",         # see the folder, read its messages, keep his own \Seen flags
    "seen": "s",           # keep \Seen flags
    "write": "w",          # other flags
    "insert": "i",         # APPEND and COPY into it
    "post": "p",           # Sieve/LMTP delivery into it
    "expunge": "te",       # mark \Deleted and expunge messages
    "delete": "x",         # delete (or rename) the folder itself
    "create": "k",         # create subfolders
    "admin": "a",          # change the rights
    "file": "lrswi",       # read and file messages (APPEND, COPY): the accountants' right
}
LETTER_ORDER = "lrwstipekxa"


def letters(names: Iterable[str]) -> str:
    """The ACL letters for right names, in Dovecot's order, each once."""
    wanted = set("".join(RIGHTS[name] for name in names))
    return "".join(c for c in LETTER_ORDER if c in wanted)
