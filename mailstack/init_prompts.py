"""The questions of `mailstack init`: a thin layer over questionary; the policy is mailstack.init.

Why questionary (on prompt_toolkit): every question takes a validator, shows the refusal under
the answer and keeps the question open until the answer passes, so the checks are the same
``init.parse_*`` functions the flags go through, with the same words; it has defaults, a
password prompt without echo, yes/no and choice lists, and it is maintained (MIT, on PyPI,
prompt_toolkit underneath, which also serves IPython). click's prompts would re-ask too but
only line by line, without a choice list or editing the default in place; prompt_toolkit alone
would mean writing the choice list and yes/no ourselves.

Only answers the flags did not give are asked; with every required flag given nothing is asked
at all, and without a terminal a missing required answer is an error (never a hang).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from mailstack import init
from mailstack.errors import InputError
from mailstack.init import Answers, FetchAnswer


def complete(answers: Answers, *, interactive: bool) -> Answers:
    """The answers with every default filled in; asks for what is missing when interactive."""
    gaps = init.missing(answers)
    if not gaps:
        return init.with_defaults(answers)
    if not interactive:
        raise InputError(f"init: no answer for {', '.join(gaps)} and no terminal to ask on: "
                         "give them as flags (mailstack init --help)")
    return init.with_defaults(_ask(answers))


def _check(parse: Callable[..., Any], *args: Any) -> Callable[[str], bool | str]:
    """A questionary validator from an ``init.parse_*`` function: True, or the refusal."""
    def validate(text: str) -> bool | str:
        try:
            parse(text, *args)
        except InputError as err:
            return str(err)
        return True
    return validate


def _text(message: str, parse: Callable[..., Any], *args: Any, default: str = "") -> Any:
    import questionary

    answer = questionary.text(message, default=default,
                              validate=_check(parse, *args)).unsafe_ask()
    return parse(answer, *args)


def _password(message: str) -> str:
    import questionary

    answer = questionary.password(message, validate=_check(init.parse_password)).unsafe_ask()
    return init.parse_password(answer)


def _select(message: str, choices: list[tuple[str, str]], default: str) -> Any:
    import questionary

    return questionary.select(
        message, choices=[questionary.Choice(title, value=value) for value, title in choices],
        default=default).unsafe_ask()


def _confirm(message: str, default: bool) -> bool:
    import questionary

    return bool(questionary.confirm(message, default=default).unsafe_ask())


def _ask(a: Answers) -> Answers:
    r = dataclasses.replace
    if not a.hostname:
        a = r(a, hostname=_text("The server's full host name (mail.example.org):",
                                init.parse_hostname))
    assert a.hostname
    if not a.domains:
        a = r(a, domains=_text("Mail domain(s), separated by spaces:", init.parse_domains,
                               a.hostname, default=init.default_domain(a.hostname)))
    if not a.site:
        a = r(a, site=_text("A short name for the site:", init.parse_site_name,
                            default=init.default_site(a.domains[0])))
    if a.relay_mode is None:
        a = r(a, relay_mode=_select("Mail to other domains goes:", [
            ("direct", "directly to each domain's MX (port 25 outward must be open)"),
            ("relay", "through a relay server (the head office's, or a provider's)")], "direct"))
    if a.relay_mode == "relay":
        a = _ask_relay(a)
    if not a.accounts:
        a = _ask_accounts(a)
    if a.postmaster is None and len(a.accounts) > 1:
        a = r(a, postmaster=_select(
            "Who reads postmaster@ and abuse@ of your domains?",
            [(m, f"{n} <{m}>") for m, n in a.accounts], a.accounts[0][0]))
    fetch = list(a.fetch or ())
    for i, f in enumerate(fetch):
        if f.password is None:
            fetch[i] = r(f, password=_password(f"Password of {f.user} at {f.host}:"))
    if a.fetch is None:
        while _confirm("Collect a remote mailbox (a provider's POP3/IMAP) into an account?"
                       if not fetch else "Collect another remote mailbox?", False):
            fetch.append(_ask_fetch(a))
    return r(a, fetch=tuple(fetch))


def _ask_relay(a: Answers) -> Answers:
    own = [h for h in (a.hostname, *a.domains) if h]
    host: str = a.relay_host or _text("The relay server (host name or IP address):",
                                      init.parse_server, own)
    tls: init.RelayTls = a.relay_tls or _select("TLS to the relay:", [
        ("verify", "verify: STARTTLS, its certificate checked (usual)"),
        ("encrypt", "encrypt: STARTTLS, its certificate not checked"),
        ("wrapper", "wrapper: TLS from the first byte (port 465)")], "verify")
    tls_name = a.relay_tls_name
    if init.needs_tls_name(host, tls) and not tls_name:
        tls_name = _text("The name the relay's certificate carries:", init.parse_tls_name)
    user, password = a.relay_user, a.relay_password
    if user is None and _confirm("Does the relay want a login?", False):
        user = _text("Login name at the relay:", init.parse_login)
    if user and password is None:
        password = _password("Password at the relay (stored in secrets/):")
    port = a.relay_port or _text("The relay's port:", init.parse_port,
                                 default=str(init.default_port(tls, bool(user))))
    return dataclasses.replace(a, relay_host=host, relay_tls=tls, relay_tls_name=tls_name,
                               relay_user=user, relay_password=password, relay_port=port)


def _ask_accounts(a: Answers) -> Answers:
    accounts: list[tuple[str, str]] = []

    def parse(text: str) -> str:
        if not text.strip() and accounts:
            return ""
        return init.parse_address(text, a.domains, [m for m, _ in accounts])

    while True:
        mail = _text("An account's address (Enter when done):" if accounts else
                     "The first account's address:", parse)
        if not mail:
            return dataclasses.replace(a, accounts=tuple(accounts))
        accounts.append((mail, _text(f"{mail}: the person's full name:", init.parse_name,
                                     default=init.default_name(mail))))


def _ask_fetch(a: Answers) -> FetchAnswer:
    mails = [m for m, _ in a.accounts]
    account = mails[0] if len(mails) == 1 else _select(
        "Into which account?", [(m, m) for m in mails], mails[0])
    protocol = _select("Protocol:", [("pop3", "POP3 (port 995, TLS)"),
                                     ("imap", "IMAP (port 993, TLS)")], "pop3")
    host = _text("The provider's server:", init.parse_server)
    user = _text("Login name there:", init.parse_login)
    password = _password(f"Password of {user} at {host} (stored in secrets/):")
    keep = _confirm("Leave the messages at the provider?", True)
    return FetchAnswer(account, protocol, host, user, password, keep)
