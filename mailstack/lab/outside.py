"""The site's secrets about the outside world, made up by the lab when the site has none.

A site that talks to a relay with a private CA (``ca_secret``), logs in at a provider
(``auth.password_secret``) or collects remote mailboxes (``fetch``: ``password_secret``,
``ca_secret``) needs secrets that only the owners of those servers can give: ``mailstack
secrets`` never makes them (kind ``external``). In the lab the lab *is* those owners, so it
fills in the missing ones, each file mode 0600, never overwriting one that exists:

* a relay's ``ca_secret`` <- the CA certificate of the container that stands in for the relay
  (its relay container, or the provider for a relay the provider answers for);
* a fetch's ``ca_secret`` <- the provider's CA certificate;
* ``tls.acme.ca_secret`` <- the CA of the lab's ACME server's own HTTPS certificate (pebble in
  the client, :mod:`mailstack.lab.acme`);
* ``auth.password_secret`` and a fetch's ``password_secret`` <- a random password. One login
  has one password at the provider: when a login's password is named by several secrets (or
  one secret serves a relay and a fetch), they all get the same value, and a secret that
  exists gives its value to the others and to the provider's mailbox.

A CA secret that exists but does not hold the stand-in's CA is left alone and reported: the
site's Postfix or getmail will refuse the lab's certificate. The lab's CAs are kept in
``build/<site>/lab-ca`` (see :mod:`mailstack.lab.tls`), so a rerun, even after ``lab down``,
makes no new ones and what it made before still matches.

:func:`outside_secrets` is pure (what is needed, from the site and the lab plan);
:func:`prepare` reads and writes files but runs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization

from mailstack import secrets as site_secrets
from mailstack.findings import Finding, raise_errors
from mailstack.lab import tls
from mailstack.lab.plan import LabContainer, LabPlan, fixture_id
from mailstack.site.marks import Path as KeyPath
from mailstack.site.marks import format_path
from mailstack.site.model import Site

__all__ = [
    "ACME",
    "OutsideReport",
    "OutsideSecret",
    "ca_common_name",
    "outside_secrets",
    "prepare",
]


@dataclass(frozen=True)
class OutsideSecret:
    """One secret about the outside world the site names."""

    name: str
    kind: Literal["ca", "password"]
    fixtures: tuple[str, ...] = ()
    """A CA secret: ids of the stand-ins (:func:`~mailstack.lab.plan.fixture_id`) whose CA
    certificate it must hold (more than one: a bundle)."""
    users: tuple[str, ...] = ()
    """A password secret: the provider logins it is the password of."""
    asked_by: tuple[KeyPath, ...] = ()
    """Where the site file names it."""


@dataclass(frozen=True)
class OutsideReport:
    """What :func:`prepare` found and did."""

    created: tuple[str, ...] = ()
    """Secret names written just now (0600)."""
    warnings: tuple[str, ...] = ()
    """Secrets that exist but do not fit the lab, one line each."""
    passwords: dict[str, str] = field(default_factory=dict)
    """Provider login -> the password its mailbox gets."""
    cas: dict[str, tls.KeyPair] = field(default_factory=dict)
    """Stand-in id -> its CA."""


ACME = "acme"
"""The id of the lab's ACME server among the stand-ins' CAs (``lab-ca/acme-ca.crt``)."""


def ca_common_name(site: str, c: LabContainer) -> str:
    what = "the provider" if c.role == "provider" else f"relay {c.key}"
    return f"mailstack lab {site}: CA of {what}"


def outside_secrets(site: Site, plan: LabPlan) -> list[OutsideSecret]:
    """The outside-world secrets the site names, in site order (relays, then fetches), with
    what the lab would put in each; InputError when one name is asked for as a CA and as a
    password."""
    cas: dict[str, list[str]] = {}
    users: dict[str, list[str]] = {}
    asked: dict[str, list[KeyPath]] = {}
    kinds: dict[str, str] = {}
    findings: list[Finding] = []

    def add(name: str, kind: str, path: KeyPath, *, fixture: str = "", user: str = "") -> None:
        if kinds.setdefault(name, kind) != kind:
            first = asked[name][0]
            findings.append(Finding(site.marks.at(path), path,
                                    f"secret '{name}' is asked for as a {kind} here and as a "
                                    f"{kinds[name]} at {format_path(first)}: the lab cannot "
                                    "make one file that is both"))
            return
        asked.setdefault(name, []).append(path)
        if fixture and fixture not in cas.setdefault(name, []):
            cas[name].append(fixture)
        if user and user not in users.setdefault(name, []):
            users[name].append(user)

    for rname, relay in site.relays.items():
        stand_in = fixture_id(plan.relay(rname))
        if relay.auth:
            add(relay.auth.password_secret, "password",
                ("relays", rname, "auth", "password_secret"), user=relay.auth.user)
        if relay.ca_secret:
            add(relay.ca_secret, "ca", ("relays", rname, "ca_secret"), fixture=stand_in)
    for i, fetch in enumerate(site.fetch):
        add(fetch.password_secret, "password", ("fetch", i, "password_secret"), user=fetch.user)
        if fetch.ca_secret:
            add(fetch.ca_secret, "ca", ("fetch", i, "ca_secret"), fixture="provider")
    if site.tls.mode == "acme" and site.tls.acme and site.tls.acme.ca_secret:
        add(site.tls.acme.ca_secret, "ca", ("tls", "acme", "ca_secret"), fixture=ACME)
    raise_errors(findings)
    return [
        OutsideSecret(name, "ca" if kinds[name] == "ca" else "password",
                      fixtures=tuple(cas.get(name, ())), users=tuple(users.get(name, ())),
                      asked_by=tuple(asked[name]))
        for name in asked
    ]


def _write_new(path: Path, text: str) -> bool:
    """Create ``path`` (0600, parents 0700) unless it exists; True when it was written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True


def _same_cert(a: str, b: tls.KeyPair) -> bool:
    want = tls.certificates_in(b.cert)[0].public_bytes(serialization.Encoding.DER)
    return any(c.public_bytes(serialization.Encoding.DER) == want for c in tls.certificates_in(a))


def prepare(site: Site, plan: LabPlan, store: site_secrets.SecretStore, ca_root: Path
            ) -> OutsideReport:
    """Make the stand-ins' CAs (kept in ``ca_root``) and every missing outside secret."""
    needed = outside_secrets(site, plan)
    cas = {fixture_id(c): tls.ensure_ca(ca_root, fixture_id(c), ca_common_name(site.site, c))
           for c in plan.stand_ins}
    if site.tls.mode == "acme":
        cas[ACME] = tls.ensure_ca(ca_root, ACME, f"mailstack lab {site.site}: CA of the ACME "
                                                 "server")
    created: list[str] = []
    warnings: list[str] = []
    describe = {fixture_id(c): ("the lab's provider" if c.role == "provider"
                                else f"the lab's relay {c.key}") for c in plan.stand_ins}
    describe[ACME] = "the lab's ACME server"

    for secret in needed:
        if secret.kind != "ca":
            continue
        if store.exists(secret.name):
            held = store.read(secret.name)
            for fixture in secret.fixtures:
                if not _same_cert(held, cas[fixture]):
                    warnings.append(
                        f"{store.path(secret.name)}: secret '{secret.name}' does not hold the CA "
                        f"of {describe[fixture]} ({ca_root / (fixture + '-ca.crt')}): its "
                        "certificate will not verify, so mail to it will not go out (tls: "
                        "verify/wrapper) or collection will fail; remove the file and run "
                        "`mailstack lab up` again to let the lab write it")
            continue
        bundle = "".join(cas[f].cert for f in secret.fixtures)
        if _write_new(store.path(secret.name), bundle):
            created.append(secret.name)

    values: dict[str, str] = {}
    for secret in needed:
        if secret.kind == "password" and store.exists(secret.name):
            values[secret.name] = store.read(secret.name)
    passwords: dict[str, str] = {}
    provider = plan.provider
    for user in provider.mailboxes if provider else ():
        names = [s.name for s in needed if s.kind == "password" and user in s.users]
        have = list(dict.fromkeys(values[n] for n in names if n in values))
        if len(have) > 1:
            shown = ", ".join(f"'{n}'" for n in names if n in values)
            warnings.append(f"{store.root}: secrets {shown} are all passwords of {user} at the "
                            f"provider but differ; the lab's provider takes the first one")
        password = have[0] if have else site_secrets.new_password()
        for name in names:
            if name not in values:
                if _write_new(store.path(name), password + "\n"):
                    created.append(name)
                values[name] = password
        passwords[user] = password
    return OutsideReport(created=tuple(created), warnings=tuple(warnings),
                         passwords=passwords, cas=cas)
