"""The outside world's stand-ins of a lab that is up, as one loaded object.

    world = StandIns(lab.state(site_file))        # reads the site and lab.json once
    world.relay_messages("head-office"); world.provider_messages(); world.relay_auth_attempts(...)

A relay the provider answers for (a relay with auth) is the provider here: its sink, its log.
Polling loops (verify's hops) keep one object instead of re-reading YAML and lab.json each turn;
``mailstack.lab``'s functions keyed by the site file wrap these methods for one-off calls.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from mailstack.errors import InputError, ToolError
from mailstack.lab import fixture, tls
from mailstack.lab import provider as provider_fixture
from mailstack.lab.plan import LabContainer, fixture_id
from mailstack.lab.state import LabState

_SASL_USER = re.compile(r"\bsasl_username=([^,\s]+)")


def auth_usernames(log: str) -> list[str]:
    """User names of the SMTP AUTH attempts in a Postfix log, first appearance first: the
    ``sasl_username=`` of accepted messages (``client=..., sasl_username=U``) and of failed
    attempts (``SASL PLAIN authentication failed: ..., sasl_username=U``)."""
    return list(dict.fromkeys(_SASL_USER.findall(log)))


def cert_names(c: LabContainer) -> tuple[str, ...]:
    """The names a stand-in's certificate carries."""
    return c.tls_names or (c.hostname,)


@dataclass(frozen=True)
class StandIns:
    """The relays and the provider of one lab (``lab`` as ``lab up`` recorded it)."""

    lab: LabState

    # -- which container -----------------------------------------------------------------
    def relay(self, name: str) -> LabContainer:
        """The container that answers for the site's relay ``name``."""
        try:
            return self.lab.relay(name)
        except KeyError:
            names = ", ".join(n for c in self.lab.stand_ins for n in c.stands_for) or "none"
            raise InputError(f"the lab of {self.lab.site} has no relay {name!r} "
                             f"(relays: {names})") from None

    @property
    def provider(self) -> LabContainer:
        if self.lab.provider is None:
            raise InputError(f"the lab of {self.lab.site} has no provider: the site names no "
                             "relay with auth and no fetch")
        return self.lab.provider

    # -- relays: what they kept, what they saw -------------------------------------------
    def relay_messages(self, name: str) -> list[str]:
        """Raw messages kept by relay ``name``'s stand-in (its sink Maildir), oldest first."""
        return fixture.maildir_messages(self.relay(name), fixture.SINK_DIR)

    def clear_relay_messages(self, name: str) -> None:
        """Empty the sink Maildir and the Postfix and Dovecot logs of ``name``'s stand-in."""
        fixture.clear_sink(self.relay(name))

    def relay_log(self, name: str) -> str:
        """The Postfix log of relay ``name``'s stand-in (``from=``, ``status=``,
        ``sasl_username=`` lines)."""
        return fixture.read_file(self.relay(name), fixture.MAIL_LOG)

    def relay_auth_attempts(self, name: str) -> list[str]:
        """User names anyone tried SMTP AUTH with at relay ``name``'s stand-in since its log was
        last cleared. A relay container lets nobody log in: any name here is a site offering it
        credentials (meant for another relay). For a relay the provider answers for, these are
        the provider's logins, failed or not."""
        return auth_usernames(self.relay_log(name))

    def break_relay_certificate(self, name: str) -> None:
        """Make relay ``name``'s stand-in present a certificate of a CA nobody knows (same
        names), reload its Postfix and wait until every listener presents it. For the provider
        only its Postfix changes. Undo with :meth:`restore_relay_certificate` (or ``lab up``)."""
        c = self.relay(name)
        unknown = tls.new_ca(f"mailstack lab: a CA nobody trusts ({uuid.uuid4().hex[:8]})")
        bogus = tls.issue(unknown, cert_names(c))
        fixture.serve_certificate(c, bogus.cert, bogus.key)

    def restore_relay_certificate(self, name: str) -> None:
        """Put the lab CA's certificate back on relay ``name``'s stand-in."""
        c = self.relay(name)
        ident = fixture_id(c)
        crt, key = self.lab.lab_dir / f"{ident}.crt", self.lab.lab_dir / f"{ident}.key"
        try:
            pair = tls.KeyPair(crt.read_text(encoding="utf-8"), key.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ToolError(f"{crt} or its key is missing: run `mailstack lab up` again") \
                from None
        fixture.serve_certificate(c, pair.cert, pair.key)

    # -- the provider ----------------------------------------------------------------------
    def provider_messages(self) -> list[str]:
        """Raw messages the provider accepted from logged-in users (its sink), oldest first."""
        return provider_fixture.messages(self.provider)

    def clear_provider_messages(self) -> None:
        """Empty the provider's sink Maildir and its Postfix and Dovecot logs."""
        fixture.clear_sink(self.provider)

    def provider_mailbox(self, user: str) -> list[str]:
        """Raw messages in the provider mailbox of login ``user``, oldest first."""
        return provider_fixture.mailbox(self.provider, user)

    def put_provider_message(self, user: str, raw: str, seen: bool = False) -> str:
        """Drop message ``raw`` into the provider mailbox of ``user`` (``new/``; with
        ``seen``: ``cur/NAME:2,S``, as if read at the provider); return its path there."""
        return provider_fixture.put_message(self.provider, user, raw, seen=seen)

    def clear_provider_mailbox(self, user: str) -> None:
        """Delete every message in the provider mailbox of ``user``."""
        provider_fixture.clear_mailbox(self.provider, user)

    def provider_log(self, daemon: str = "postfix") -> str:
        """The provider's Postfix log or, with ``daemon="dovecot"``, its Dovecot log."""
        return provider_fixture.read_log(self.provider, daemon)

    def provider_auth_attempts(self) -> list[str]:
        """User names anyone tried SMTP AUTH with at the provider (failed or not), first
        appearance first, since its log was last cleared."""
        return auth_usernames(self.provider_log())

    def set_provider_password(self, user: str, password: str) -> None:
        """Give the provider mailbox ``user`` another password (for SMTP AUTH, IMAP and POP3)
        so the site's credentials are wrong; the next ``lab up`` puts the site's back."""
        provider_fixture.set_password(self.provider, user, password)
