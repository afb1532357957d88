"""Sieve (Pigeonhole): the site's rules, vacation replies and the shared folders' filing accounts.

Every delivery (LMTP) runs, in this order (Pigeonhole's ``sieve_before``, ``sieve_before2``):

1. :data:`BEFORE_DIR`: the site's own scripts for every account, in file name order: the spam
   rule (``sieve.spam_header: YES`` -> the folder whose special use is junk) and the admin's
   ``sieve.before``. A ``stop`` there ends everything (no vacation reply to spam).
2. :func:`account_script`: one script per account the site gives one, found by the recipient's
   address (``%Lu``): a vacation reply (``accounts[].vacation``), or the filing of a shared
   folder's address. An account without one has no file: Pigeonhole skips a missing script.
3. the user's own active script (``~/.dovecot.sieve``, uploaded over ManageSieve; his scripts
   live in ``~/sieve``).

The scripts are rendered under /etc/dovecot (root's, read-only to the LMTP process running as
vmail), so Dovecot cannot write their compiled ``.svbin`` there at delivery: the dovecot role's
staged check compiles every one with ``sievec`` in the staged directory (a compile error fails
the check before the swap) and the compiled files go live with the scripts.

A shared folder's ``address`` is a delivery-only account (plan/dit.py's ``delivery_accounts``: every
service disabled, no password) whose per-account script files every message into the shared
folder and stops; detail addresses (``invoices+X@``) reach the same account and the same
script (``lmtp_save_to_detail_mailbox`` stays ``no``), so a sender cannot choose a folder.
"""

from __future__ import annotations

from mailstack.plan import FileSpec
from mailstack.site.model import Site, Vacation

SIEVE_DIR = "/etc/dovecot/sieve"
BEFORE_DIR = f"{SIEVE_DIR}/before"
ACCOUNTS_DIR = f"{SIEVE_DIR}/accounts"
SPAM_SCRIPT = f"{BEFORE_DIR}/10-spam.sieve"
SITE_SCRIPT = f"{BEFORE_DIR}/20-site.sieve"
# the user's scripts (ManageSieve) and the active one, in his home
USER_SCRIPTS = "file:~/sieve;active=~/.dovecot.sieve"
# Shared folders of the public namespace appear under this prefix (the folders branch owns the
# namespace; this is the name the filing script uses)
PUBLIC_PREFIX = "Public/"


def quote(text: str) -> str:
    """A Sieve quoted string (RFC 5228 2.4.2: ``\\`` and ``"`` escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def junk_folder(site: Site) -> str | None:
    return next((f.name for f in site.folders if f.special_use == "junk"), None)


def spam_script(site: Site) -> str | None:
    """The site's spam rule, or None (no ``sieve.spam_header`` or no junk folder)."""
    junk = junk_folder(site)
    if not site.sieve.spam_header or junk is None:
        return None
    return (
        "# mailstack: the site's spam rule, before every account's own rules\n"
        'require ["fileinto", "mailbox"];\n'
        f"if header :is {quote(site.sieve.spam_header)} \"YES\" {{\n"
        f"  fileinto :create {quote(junk)};\n"
        "  stop;\n"
        "}\n")


def vacation_script(vacation: Vacation) -> str:
    """An automatic reply, once per sender in ``days`` (the vacation extension's own record)."""
    return (
        "# mailstack: the site's vacation reply for this account (accounts[].vacation)\n"
        'require ["vacation"];\n'
        f"vacation :days {vacation.days} :subject {quote(vacation.subject)}\n"
        f"  {quote(vacation.text)};\n")


def filing_script(folder: str) -> str:
    """Everything to ``folder`` and nothing else (a shared folder's address)."""
    return (
        "# mailstack: a shared folder's address files every message into the folder\n"
        'require ["fileinto"];\n'
        f"fileinto {quote(folder)};\n"
        "stop;\n")


def account_scripts(site: Site) -> dict[str, str]:
    """Address (lower case) -> the per-account script the site gives it."""
    out = {a.mail.lower(): vacation_script(a.vacation) for a in site.accounts if a.vacation}
    for f in site.shared_folders:
        if f.address:
            out[f.address.lower()] = filing_script(shared_folder_name(f.name, f.owner))
    return out


def shared_folder_name(name: str, owner: str) -> str:
    """The name a filing script uses for a shared folder (public ones under Public/)."""
    return f"{PUBLIC_PREFIX}{name}" if owner == "public" else name


def account_script(address: str) -> str:
    return f"{ACCOUNTS_DIR}/{address.lower()}.sieve"


def global_settings(site: Site, host: str) -> list[tuple[str, str]]:
    """Dovecot's own settings Sieve needs: where replies (vacation) are submitted.

    Over SMTP to Postfix, not through sendmail: LMTP runs as vmail and Debian's postdrop
    refused it in the lab ("postdrop: warning: mail_queue_enter: create file maildrop/...:
    Permission denied"; the delivery stalled 30 s per reply and the reply was lost). On the
    mail host Postfix takes it on loopback (in mynetworks); from a separate imap host it goes
    to the site's mta by name.
    """
    if "mta" in site.hosts[host].roles:
        target = "127.0.0.1"
    else:
        target = next(h.hostname for _, h in sorted(site.hosts.items()) if "mta" in h.roles)
    return [("submission_host", f"{target}:25")]


def plugin_settings(site: Site) -> list[tuple[str, str]]:
    """The sieve plugin's settings (``plugin {}``)."""
    return [
        ("sieve", USER_SCRIPTS),
        ("sieve_before", BEFORE_DIR),
        # %Lu: the recipient's address, lower case, as account_script names the file
        ("sieve_before2", f"{ACCOUNTS_DIR}/%Lu.sieve"),
        # vacation: "days" from the site may be 1 (the default minimum is 1 day anyway)
        ("sieve_vacation_min_period", "1d"),
    ]


def files(site: Site) -> list[FileSpec]:
    """The site's Sieve scripts under /etc/dovecot (the dovecot role places and compiles them)."""
    out: list[FileSpec] = []
    spam = spam_script(site)
    if spam:
        out.append(FileSpec(SPAM_SCRIPT, "_formats/verbatim.j2", {"text": spam}))
    if site.sieve.before:
        text = site.sieve.before if site.sieve.before.endswith("\n") else site.sieve.before + "\n"
        out.append(FileSpec(SITE_SCRIPT, "_formats/verbatim.j2", {"text": text}))
    for address, text in sorted(account_scripts(site).items()):
        out.append(FileSpec(account_script(address), "_formats/verbatim.j2", {"text": text}))
    return out
