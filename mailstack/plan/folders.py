"""Folders: the rights names of the site file and Dovecot's ACL letters, in one table.

The site file names rights in words (``read``, ``file``, ``admin``); Dovecot's ACL files
(``acl = vfile``) and IMAP ACL (RFC 4314) use letters. :data:`RIGHTS` is the only place that
maps one to the other; ``file`` is the usual "may put mail here" bundle.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from mailstack.plan import dit
from mailstack.site.model import SharedFolder, Site

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


# -- the folder tree (Dovecot 2.3.19, tried) ----------------------------------------------
#
# dovecot.conf takes UTF-8 mailbox names (``mailbox "Отправленные" { ... }``); IMAP clients see
# them in modified UTF-7 (RFC 3501 5.1.3): ``&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-``. Maildir++
# keeps a folder in ``.Name`` and nests with ``.``: a ``.`` in a name is refused ("Character
# not allowed in mailbox name: '.'"); the namespace's separator is ``/``.

PUBLIC_PREFIX = "Public/"
PUBLIC_DIR = "/var/vmail/public"
ACL_FILE = "/etc/dovecot/dovecot-acl"
TREE_FILE = "/var/lib/mailstack/dovecot-folder-tree.json"
"""The folder tree the last apply placed: the next one reports folders that left it."""
# each user's own \Seen flags (and indexes) of shared mail live in his home
PUBLIC_LOCATION = f"maildir:{PUBLIC_DIR}:INDEXPVT=~/public"
SPECIAL_USE = {"drafts": "\\Drafts", "sent": "\\Sent", "trash": "\\Trash", "junk": "\\Junk",
               "archive": "\\Archive"}
_TIME_UNITS = {"s": "secs", "m": "mins", "h": "hours", "d": "days", "w": "weeks"}
# what Dovecot's Maildir++ layout or IMAP cannot carry in a folder name; '/' nests
BAD_NAME_CHARS = ".%*\\\""
FILING_RIGHTS = ("lookup", "post")
"""The filing account of a shared folder with an address (Sieve ``fileinto``): ``lp``. Tried
with dovecot-lda -m: ``p`` alone saves into the folder; without any right the message lands in
the filing account's INBOX, silently."""


def dovecot_time(duration: str) -> str:
    """30d -> ``30 days``: a retention as Dovecot's time settings spell it."""
    return f"{int(duration[:-1])} {_TIME_UNITS[duration[-1]]}"


def quote(name: str) -> str:
    """A mailbox name for ``mailbox NAME {`` in dovecot.conf: always quoted (spaces, UTF-8)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def utf7(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3), as clients see it."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            raw = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def name_problem(name: str) -> str | None:
    """Why Dovecot (Maildir++, separator '/') cannot keep a folder of this name, or None."""
    if not name.strip() or name != name.strip():
        return "a folder name must not be empty or start or end with a space"
    bad = sorted({c for c in name if c in BAD_NAME_CHARS or ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        return (f"a folder name cannot contain {' '.join(repr(c) for c in bad)} (Maildir++ "
                "nests folders with '.'; '%' and '*' are IMAP wildcards)")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "'/' nests folders: no leading, trailing or double '/'"
    if name.split("/")[0].upper() == "INBOX":
        return "INBOX is every account's own inbox, not a folder of the tree"
    if name.startswith("~"):
        return "a folder name must not start with '~'"
    return None


def mailboxes(site: Site) -> list[dict[str, str | None]]:
    """The inbox namespace's ``mailbox`` sections: every account's folder tree."""
    return [{"name": quote(f.name),
             "special_use": SPECIAL_USE[f.special_use] if f.special_use else None,
             "autoexpunge": dovecot_time(f.retention) if f.retention else None}
            for f in site.folders]


def public_folders(site: Site) -> tuple[SharedFolder, ...]:
    return tuple(s for s in site.shared_folders if s.owner == "public")


def public_dirs(site: Site) -> list[str]:
    """The Maildir++ directories of the public namespace's folders (apply creates them, owned
    by vmail; Dovecot does not create a public mailbox on its own)."""
    return [f"{PUBLIC_DIR}/.{utf7(s.name).replace('/', '.')}" for s in public_folders(site)]


def identifier(site: Site, key: str) -> str:
    """A rights key of the site file as a Dovecot ACL identifier: a group or an account."""
    if key in {g.name for g in site.groups}:
        return f"group={key}"
    return f"user={key.lower()}"


def acl_lines(site: Site) -> list[str]:
    """The global ACL file (``acl = vfile:FILE``): ``Public/NAME IDENTIFIER LETTERS``.

    Dovecot 2.3 needs the namespace prefix in a global file's entries (without it nobody has
    any right); group rights add up (a user in two groups has both: acl_groups)."""
    out = []
    for s in public_folders(site):
        mailbox = PUBLIC_PREFIX + s.name
        for key, names in s.rights.items():
            out.append(f"{_acl_name(mailbox)} {identifier(site, key)} {letters(names)}")
        if s.address:
            out.append(f"{_acl_name(mailbox)} user={s.address.lower()} {letters(FILING_RIGHTS)}")
    return out


def _acl_name(mailbox: str) -> str:
    """A mailbox in the global ACL file: UTF-8 as in dovecot.conf; spaces quoted."""
    return f'"{mailbox}"' if " " in mailbox else mailbox


def acl_groups_value(groups: Iterable[str]) -> str:
    """One value for the userdb's ``acl_groups``: the names joined with ',' (written by
    dit.account_entry).

    Tried on 2.3.19: a multi-valued LDAP attribute gives Dovecot only its first value
    ("Multiple values found for 'acl_groups', using value 'accounting'") and
    ``%{ldap_multi:...}`` does not exist there ("Unknown variable '%ldap_multi'"). So
    ``mailstackAclGroup`` carries ONE value, e.g. ``accounting,staff`` (group names cannot
    contain ',')."""
    return dit.acl_groups_value(list(groups))


def account_rights(site: Site) -> dict[str, dict[str, str]]:
    """Public folder name (IMAP, with the prefix, modified UTF-7) -> account (lower case) ->
    the letters Dovecot grants it: its own entry and every group's it is in, added up (what
    verify expects MYRIGHTS to answer). An account missing here sees nothing of the folder."""
    groups = {g.name for g in site.groups}
    out: dict[str, dict[str, str]] = {}
    for s in public_folders(site):
        wanted: dict[str, set[str]] = {}
        for key, names in s.rights.items():
            members = dit.group_members(site, key) if key in groups else (key,)
            for mail in members:
                wanted.setdefault(mail.lower(), set()).update(letters(names))
        out[utf7(PUBLIC_PREFIX + s.name)] = {
            mail: "".join(c for c in LETTER_ORDER if c in got) for mail, got in wanted.items()}
    return out


def special_use_folders(site: Site) -> dict[str, str]:
    """IMAP name (modified UTF-7) -> special-use attribute, for every account's LIST."""
    return {utf7(f.name): SPECIAL_USE[f.special_use] for f in site.folders if f.special_use}
