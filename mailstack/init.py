"""`mailstack init DIR`: a new site from what an admin knows. Policy only, no prompts.

The answers (:class:`Answers`) come from flags (:func:`from_flags`) or from the questions
(``mailstack/init_prompts.py``, a thin layer over questionary). Both check every answer with the
same ``parse_*`` functions here, which return the value as the site file spells it or raise
:class:`InputError` with the words the admin sees (after ``--flag:`` for a flag, under the
question in a terminal). :func:`site_data` builds the site as Python data with the model's keys
(``site/model.py``), :func:`site_text` writes it as YAML with a comment per section, and
:func:`create` writes ``DIR/site.yml`` (never over an existing one), the passwords the admin
typed (relay login, remote mailboxes) into the secrets folder, then makes every other secret as
`mailstack secrets` does and writes an Ansible inventory for `apply -i`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from mailstack import secrets
from mailstack.checks.contexts import DOVECOT_USERNAME_CHARS
from mailstack.checks.names import HOST_KEY, ROLE_ADDRESSES, valid_address, valid_domain
from mailstack.checks.relay import is_ip
from mailstack.errors import InputError
from mailstack.site.model import Bans, Quota, RelayTls

RelayMode = Literal["direct", "relay"]
Protocol = Literal["pop3", "imap"]
RELAY_MODES: tuple[RelayMode, ...] = get_args(RelayMode)
RELAY_TLS: tuple[RelayTls, ...] = get_args(RelayTls)
FETCH_PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)
RELAY_NAME = "smarthost"
"""The one relay init writes (relays: smarthost), the site's default route."""
SITE_FILE = "site.yml"
INVENTORY_FILE = "inventory.yml"


@dataclass(frozen=True)
class FetchAnswer:
    """A remote mailbox to collect into a local account (always over TLS)."""

    account: str
    protocol: Protocol
    host: str
    user: str
    password: str | None = field(default=None, repr=False)
    keep: bool = True


@dataclass(frozen=True)
class Answers:
    """What the admin answered; None (or empty) is "not answered yet"."""

    hostname: str | None = None
    domains: tuple[str, ...] = ()
    site: str | None = None
    relay_mode: RelayMode | None = None
    relay_host: str | None = None
    relay_tls: RelayTls | None = None
    relay_port: int | None = None
    relay_tls_name: str | None = None
    relay_user: str | None = None
    relay_password: str | None = field(default=None, repr=False)
    accounts: tuple[tuple[str, str], ...] = ()
    postmaster: str | None = None
    fetch: tuple[FetchAnswer, ...] | None = None


# -- one answer each: the value as the site spells it, or InputError with the admin's words --

def parse_hostname(text: str) -> str:
    name = text.strip().lower()
    if not valid_domain(name):  # a full host name is spelled like a domain name
        raise InputError(f"'{text.strip()}' is not a full host name: use a-z, digits, dots and "
                         "hyphens (mail.example.org)")
    return name


def parse_domains(text: str, hostname: str | None) -> tuple[str, ...]:
    """One or more mail domains, separated by commas or spaces."""
    out: list[str] = []
    for word in re.split(r"[\s,]+", text.strip()):
        if not word:
            continue
        domain = word.lower()
        if not valid_domain(domain):
            raise InputError(f"'{word}' is not a domain name (such as example.org)")
        if domain == hostname:
            raise InputError(f"'{word}' is the server's host name; the mail domain is usually "
                             "the part after its first dot")
        if domain in out:
            raise InputError(f"'{word}' is given twice")
        out.append(domain)
    if not out:
        raise InputError("at least one mail domain is needed")
    return tuple(out)


def parse_site_name(text: str) -> str:
    name = text.strip()
    if not HOST_KEY.match(name):  # the model's site pattern, the same rule as a host key
        raise InputError(f"'{name}' is not a site name: use a-z, digits and hyphens "
                         "(it names build/<site>/)")
    return name


def parse_server(text: str, own: Sequence[str] = ()) -> str:
    """A relay's or a provider's server: a host name or an IP address, not this site."""
    host = text.strip().lower()
    if not (is_ip(host) or valid_domain(host)):
        raise InputError(f"'{text.strip()}' is neither a host name nor an IP address")
    if host in own:
        raise InputError(f"'{host}' is this site itself: mail sent there would loop")
    return host


def parse_port(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise InputError(f"'{text.strip()}' is not a TCP port (1 to 65535)")
    return int(text)


def parse_tls_name(text: str) -> str:
    name = text.strip().lower()
    if not valid_domain(name):
        raise InputError(f"'{text.strip()}' is not a host name (the name the relay's "
                         "certificate carries)")
    return name


def parse_login(text: str) -> str:
    if not text.strip():
        raise InputError("the login name cannot be empty")
    if text != text.strip():
        raise InputError("the login name cannot start or end with a space")
    if ":" in text:
        raise InputError("the login name cannot hold ':' (Postfix's password map splits there)")
    return text


def parse_password(text: str) -> str:
    if not text:
        raise InputError("the password cannot be empty")
    if text != text.strip() or any(c in text for c in "\r\n\x00"):
        raise InputError("the password cannot start or end with a space or hold a line break "
                         "(it goes into Postfix's and getmail's files)")
    return text


def parse_address(text: str, domains: Sequence[str], taken: Sequence[str] = ()) -> str:
    """A new account's address: in one of the site's domains, a login Dovecot accepts."""
    mail = text.strip().lower()
    local, _, domain = mail.rpartition("@")
    if not valid_address(mail):
        raise InputError(f"'{text.strip()}' is not a mail address (such as ivan@{domains[0]})")
    if domain not in domains:
        raise InputError(f"'{mail}' is not in the site's domains ({', '.join(domains)})")
    if any(c not in DOVECOT_USERNAME_CHARS for c in local):
        raise InputError(f"'{mail}': an account's address is its login name: use letters, "
                         "digits, '.', '-' and '_' before the @")
    if mail in taken:
        raise InputError(f"'{mail}' is already an account")
    return mail


def parse_name(text: str) -> str:
    name = " ".join(text.split())
    if not name:
        raise InputError("the name cannot be empty")
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise InputError("the name cannot hold control characters")
    return name


def default_name(mail: str) -> str:
    """ivan.petrov@... -> Ivan Petrov: a default for the name question."""
    return " ".join(w.capitalize() for w in re.split(r"[._-]+", mail.rpartition("@")[0]) if w)


def default_domain(hostname: str) -> str:
    """mail.krasnoyarsk.example.org -> krasnoyarsk.example.org (a name with one dot: itself)."""
    rest = hostname.partition(".")[2]
    return rest if "." in rest else hostname


def default_site(domain: str) -> str:
    return domain.split(".")[0]


def ldap_base(domain: str) -> str:
    return ",".join(f"dc={label}" for label in domain.split("."))


def host_key(hostname: str) -> str:
    """The host's short name in the site file (it names tls/<key>.crt and build/<site>/<key>)."""
    first = hostname.split(".")[0]
    return first if HOST_KEY.match(first) else "mail"


def default_port(tls: RelayTls, login: bool) -> int:
    """465 for TLS from the first byte, 587 (submission) with a login, else 25."""
    return 465 if tls == "wrapper" else 587 if login else 25


def needs_tls_name(host: str, tls: RelayTls) -> bool:
    """A relay named by IP address whose certificate is checked needs the name it carries."""
    return is_ip(host) and tls != "encrypt"


def read_password_file(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read the password: {err.strerror}") from None
    return text.split("\n", 1)[0].removesuffix("\r")


# -- flags -> answers --

def _flag(flag: str, parse: Callable[..., Any], *args: Any) -> Any:
    try:
        return parse(*args)
    except InputError as err:
        raise InputError(f"init: {flag}: {err}") from None


def parse_account_flag(text: str, domains: Sequence[str], taken: Sequence[str]
                       ) -> tuple[str, str]:
    """ADDRESS:NAME."""
    mail, colon, name = text.partition(":")
    if not colon:
        raise InputError(f"'{text}': give ADDRESS:NAME (ivan@{domains[0]}:\"Ivan Petrov\")")
    return parse_address(mail, domains, taken), parse_name(name)


def parse_fetch_flag(text: str, accounts: Sequence[str]) -> FetchAnswer:
    """ACCOUNT:PROTOCOL:HOST:USER[:PASSWORD_FILE]."""
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise InputError(f"'{text}': give ACCOUNT:PROTOCOL:HOST:USER[:PASSWORD_FILE]")
    account, protocol, host, user = (p.strip() for p in parts[:4])
    if account.lower() not in accounts:
        raise InputError(f"'{account}' is not one of the accounts ({', '.join(accounts)})")
    if protocol not in FETCH_PROTOCOLS:
        raise InputError(f"'{protocol}' is not pop3 or imap")
    return FetchAnswer(account.lower(), protocol, parse_server(host), parse_login(user),
                       read_password_file(parts[4]) if len(parts) == 5 else None)


def from_flags(*, hostname: str | None = None, domains: Sequence[str] = (),
               site: str | None = None, relay_mode: str | None = None,
               relay_host: str | None = None, relay_port: str | None = None,
               relay_tls: str | None = None, relay_tls_name: str | None = None,
               relay_user: str | None = None, relay_password_file: str | None = None,
               accounts: Sequence[str] = (), postmaster: str | None = None,
               fetch: Sequence[str] | None = None) -> Answers:
    """The answers the flags give, each checked (``init: --flag: message``)."""
    host = _flag("--hostname", parse_hostname, hostname) if hostname is not None else None
    doms: tuple[str, ...] = _flag("--domain", parse_domains, " ".join(domains), host) \
        if domains else ()
    relay_flags = [f for f, v in (("--relay-host", relay_host), ("--relay-port", relay_port),
                                  ("--relay-tls", relay_tls), ("--relay-tls-name", relay_tls_name),
                                  ("--relay-user", relay_user),
                                  ("--relay-password-file", relay_password_file)) if v is not None]
    if relay_mode == "direct" and relay_flags:
        raise InputError(f"init: --relay-mode direct takes no {', '.join(relay_flags)}")
    if relay_mode not in (None, *RELAY_MODES):
        raise InputError(f"init: --relay-mode: '{relay_mode}' is not direct or relay")
    if relay_tls not in (None, *RELAY_TLS):
        raise InputError(f"init: --relay-tls: '{relay_tls}' is not {', '.join(RELAY_TLS)}")
    if relay_password_file is not None and relay_user is None:
        raise InputError("init: --relay-password-file needs --relay-user")
    own = [h for h in (host, *doms) if h]
    answers = Answers(
        hostname=host, domains=doms,
        site=_flag("--site", parse_site_name, site) if site is not None else None,
        relay_mode="relay" if relay_flags else relay_mode,
        relay_host=_flag("--relay-host", parse_server, relay_host, own) if relay_host else None,
        relay_tls=relay_tls,
        relay_port=_flag("--relay-port", parse_port, relay_port) if relay_port else None,
        relay_tls_name=_flag("--relay-tls-name", parse_tls_name, relay_tls_name)
        if relay_tls_name else None,
        relay_user=_flag("--relay-user", parse_login, relay_user) if relay_user else None,
        relay_password=_flag("--relay-password-file", parse_password,
                             read_password_file(relay_password_file))
        if relay_password_file else None)
    if accounts and not doms:
        raise InputError("init: --account needs --domain (an account is in a mail domain)")
    taken: list[str] = []
    for spec in accounts:
        mail, name = _flag("--account", parse_account_flag, spec, doms, taken)
        taken.append(mail)
        answers = dataclasses.replace(answers, accounts=(*answers.accounts, (mail, name)))
    if postmaster is not None:
        if postmaster.strip().lower() not in taken:
            raise InputError(f"init: --postmaster: '{postmaster}' is not one of the accounts "
                             f"({', '.join(taken) or 'give them with --account'})")
        answers = dataclasses.replace(answers, postmaster=postmaster.strip().lower())
    if fetch is not None:
        answers = dataclasses.replace(answers, fetch=tuple(
            _flag("--fetch", parse_fetch_flag, spec, taken) for spec in fetch))
    return answers


def missing(answers: Answers) -> list[str]:
    """The flags of the required answers not given yet (those without a default)."""
    out = [flag for flag, given in (("--hostname", answers.hostname),
                                    ("--domain", answers.domains),
                                    ("--account", answers.accounts)) if not given]
    if answers.relay_mode == "relay" and not answers.relay_host:
        out.append("--relay-host")
    if answers.relay_user and answers.relay_password is None:
        out.append("--relay-password-file")
    if (answers.relay_mode == "relay" and answers.relay_host and not answers.relay_tls_name
            and needs_tls_name(answers.relay_host, answers.relay_tls or "verify")):
        out.append("--relay-tls-name")
    if any(f.password is None for f in answers.fetch or ()):
        out.append("--fetch ...:PASSWORD_FILE")
    return out


def with_defaults(answers: Answers) -> Answers:
    """Every answer that has a default, filled in; the required ones must be there."""
    if missing(answers):
        raise InputError(f"init: no answer for {', '.join(missing(answers))}")
    assert answers.hostname
    relay = answers.relay_mode == "relay"
    tls = answers.relay_tls or "verify"
    return dataclasses.replace(
        answers,
        site=answers.site or default_site(answers.domains[0]),
        relay_mode=answers.relay_mode or "direct",
        relay_tls=tls if relay else None,
        relay_port=(answers.relay_port or default_port(tls, bool(answers.relay_user)))
        if relay else None,
        postmaster=answers.postmaster or answers.accounts[0][0],
        fetch=answers.fetch or ())


# -- answers -> site --

def _fetch_secret(f: FetchAnswer, index: int) -> str:
    name = f"fetch/{f.host}/{f.user}"
    return name if secrets.valid_name(name) else f"fetch/{index + 1}"


RELAY_SECRET = f"relays/{RELAY_NAME}"


def typed_secrets(answers: Answers) -> dict[str, str]:
    """The secrets the admin typed (they cannot be generated), by their names in the site."""
    out = {RELAY_SECRET: answers.relay_password} if answers.relay_password is not None else {}
    for i, f in enumerate(answers.fetch or ()):
        if f.password is not None:
            out.setdefault(_fetch_secret(f, i), f.password)
    return out


def site_data(answers: Answers) -> dict[str, Any]:
    """The site as plain data, keys as in site/model.py, in the order the file shows them."""
    a = with_defaults(answers)
    assert a.hostname and a.site and a.postmaster is not None
    mails = [m for m, _ in a.accounts]
    data: dict[str, Any] = {
        "site": a.site,
        "domains": list(a.domains),
        "hosts": {host_key(a.hostname): {"hostname": a.hostname,
                                         "roles": ["ldap", "mta", "imap"]}},
        "ldap": {"base": ldap_base(a.domains[0])},
        "relay": {"default": RELAY_NAME if a.relay_mode == "relay" else "direct"},
    }
    if a.relay_mode == "relay":
        relay: dict[str, Any] = {"host": a.relay_host, "port": a.relay_port, "tls": a.relay_tls}
        if a.relay_tls_name:
            relay["tls_name"] = a.relay_tls_name
        if a.relay_user:
            relay["auth"] = {"user": a.relay_user, "password_secret": RELAY_SECRET}
        data["relays"] = {RELAY_NAME: relay}
    role_aliases = [f"{local}@{d}" for d in a.domains for local, _ in ROLE_ADDRESSES
                    if f"{local}@{d}" not in mails]
    accounts = []
    for mail, name in a.accounts:
        entry: dict[str, Any] = {"mail": mail, "name": name}
        if mail == a.postmaster and role_aliases:
            entry["aliases"] = role_aliases
        accounts.append(entry)
    data["accounts"] = accounts
    if a.fetch:
        data["fetch"] = [{"account": f.account, "protocol": f.protocol, "host": f.host,
                          "user": f.user, "password_secret": _fetch_secret(f, i),
                          "keep": f.keep} for i, f in enumerate(a.fetch)]
    data["clients"] = {"serve": True}
    quota, bans = Quota(), Bans()
    data["quota"] = {"warning": quota.warning, "when_full": quota.when_full}
    data["bans"] = {"max_failures": bans.max_failures, "window": bans.window,
                    "ban_time": bans.ban_time, "never": list(bans.never)}
    return data


_COMMENTS: dict[str, str] = {
    "site": "The site's short name: `render` writes build/<site>/.",
    "domains": "The mail domains whose mailboxes live here.",
    "hosts": "The server, by its short name: slapd (ldap), Postfix (mta) and Dovecot (imap) on "
             "one host. Its certificate comes from the site CA in secrets/tls/.",
    "ldap": "The directory (OpenLDAP) that holds the accounts; reached over the host's own "
            "socket only.",
    "relay": "Where mail to other domains goes: 'direct' delivers it by MX lookup (port 25 "
             "outward must be open), or the name of a relay server under relays:. Mail sent "
             "as an outside address can take another relay: routes: {senders: ...}.",
    "accounts": "Mailboxes; the address is the login name. Initial passwords are in "
                "secrets/accounts/<address> (`mailstack user passwd` changes them later). "
                "postmaster@ and abuse@ of every domain must reach someone: the aliases say who.",
    "fetch": "Remote mailboxes (a provider's POP3/IMAP over TLS) collected into local accounts "
             "every 5 minutes (getmail); keep: true leaves the messages there. The password is "
             "in secrets/<password_secret>.",
    "clients": "Mail clients set themselves up: the server answers Thunderbird (autoconfig), "
               "Outlook (Autodiscover) and iPhones (a profile per address) over HTTPS on "
               "port 443 (nginx; port 80 only redirects). Point autoconfig.<domain> and "
               "autodiscover.<domain> at the server in DNS; its certificate names them. "
               "serve: false turns it off.",
    "quota": "Mailbox size limits: none unless an account has a quota or `default` gives one. "
             "At `warning` percent the user gets a message; a message that does not fit is "
             "deferred (nothing bounces unseen).",
    "bans": "Addresses that keep failing to log in are refused for a while, per service "
            "(fail2ban). never: addresses or networks never banned (an office's NAT address).",
}
_RELAY_COMMENT = ("The relay server: tls verify (STARTTLS, certificate checked against the "
                  "system's CAs; ca_secret: a file in secrets/ for a private CA), encrypt "
                  "(STARTTLS, unchecked) or wrapper (TLS from the first byte, port 465). The "
                  "login's password is in secrets/<password_secret>, never in this file.")


def _comment(text: str, width: int = 96) -> str:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append("# " + word)
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """Mappings in block style, lists of plain values in flow style (``roles: [ldap, mta]``),
    list items indented under their key, as in the bundled example."""

    def represent_dict(self, data: Any) -> yaml.Node:  # type: ignore[override]
        return self.represent_mapping("tag:yaml.org,2002:map", data, flow_style=False)

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


_Dumper.add_representer(dict, _Dumper.represent_dict)


def _dump(value: dict[str, Any]) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=None, width=96)


def site_text(answers: Answers) -> str:
    """The site file: each section of :func:`site_data` under a comment that explains it."""
    data = site_data(answers)
    out = [_comment("A mail site, written by `mailstack init`. Edit it, then `mailstack check` "
                    "it; every key is described in docs and in the JSON Schema "
                    "(mailstack/site/schema.json). Secrets live in secrets/ beside this file, "
                    "never here.")]
    for key, value in data.items():
        if key == "relays":
            out.append(_comment(_RELAY_COMMENT) + _dump({key: value}))
            continue
        block = _dump({key: value})
        out.append(_comment(_COMMENTS[key]) + block if key in _COMMENTS else block)
    return "\n".join(out)


def inventory_text(answers: Answers) -> str:
    """An Ansible inventory for `apply -i`: the site's host by its key, reached over SSH."""
    a = with_defaults(answers)
    assert a.hostname
    head = _comment("For `mailstack apply SITE -i inventory.yml` (and plan, verify, user, status, "
                    "audit): how Ansible reaches each host of the site over SSH, as root with "
                    "your key (ssh-agent, or ansible_ssh_private_key_file). Hosts are named as "
                    "under hosts: in site.yml; ansible_host may be an IP address.")
    hosts = {host_key(a.hostname): {"ansible_host": a.hostname, "ansible_user": "root",
                                    "ansible_python_interpreter": "/usr/bin/python3"}}
    return head + yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False)


# -- files --

def refuse_existing(directory: str | os.PathLike[str]) -> Path:
    """DIR/site.yml, refused when it exists: init never overwrites a site."""
    site_file = Path(directory) / SITE_FILE
    if site_file.exists():
        raise InputError(f"{site_file}: exists already; init never overwrites a site "
                         "(nothing was written)")
    return site_file


@dataclass
class InitReport:
    site_file: Path
    inventory: Path
    inventory_written: bool
    typed: list[Path]
    secrets_dir: Path
    secrets_created: list[str]
    hostname: str

    def next_commands(self) -> list[str]:
        s = self.site_file
        return [f"mailstack check {s}",
                f"mailstack render {s} -o build",
                f"mailstack apply {s} -i {self.inventory}"]


def create(directory: str | os.PathLike[str], answers: Answers) -> InitReport:
    """Write DIR/site.yml from complete answers, the typed secrets, the generated ones (what
    `mailstack secrets` makes) and DIR/inventory.yml (kept when it exists). Nothing is
    overwritten: an existing site.yml or typed secret file stops it before anything is written."""
    from mailstack import checks, core
    from mailstack.findings import raise_errors
    from mailstack.site.load import load_site

    site_file = refuse_existing(directory)
    text, inventory = site_text(answers), inventory_text(answers)
    store = secrets.SecretStore(secrets.default_dir(site_file))
    typed = typed_secrets(answers)
    for name in typed:
        if store.path(name).exists():
            raise InputError(f"{store.path(name)}: exists already; remove it or answer "
                             "differently (nothing was written)")
    site_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = site_file.with_name(f".{SITE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        raise_errors(checks.run(load_site(tmp), None))  # a bug if it fires: answers are checked
        os.link(tmp, site_file)  # fails if a site.yml appeared meanwhile: never overwritten
    except FileExistsError:
        raise InputError(f"{site_file}: exists already; init never overwrites a site "
                         "(nothing was written)") from None
    finally:
        tmp.unlink()
    for name, value in typed.items():
        secrets.write_new(store.path(name), value)
    report = core.make_secrets(site_file)
    inv = site_file.with_name(INVENTORY_FILE)
    written = not inv.exists()
    if written:
        inv.write_text(inventory, encoding="utf-8")
    assert answers.hostname
    return InitReport(site_file, inv, written, [store.path(n) for n in typed], report.directory,
                      report.created, answers.hostname)
