"""Secrets: every secret the site refers to exists and is readable only by its owner; the
hosts' certificates are not expired and not about to expire."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

from mailstack import certs, secrets
from mailstack.errors import InputError
from mailstack.findings import Finding
from mailstack.plan import layout, web
from mailstack.site.model import Site


def check(site: Site, store: secrets.SecretStore,
          now: datetime.datetime | None = None) -> Iterator[Finding]:
    # written into Postfix's LDAP tables and SASL maps, which strip the spaces around a value
    # and cannot quote (Dovecot's files quote them; the others are read whole or by ldappasswd)
    in_files = {layout.secret_service("postfix")} | {
        r.auth.password_secret for r in site.relays.values() if r.auth}
    readable: set[str] = set()
    for ref in secrets.required(site):
        mark = site.marks.at(ref.path)
        if not secrets.valid_name(ref.name):
            yield Finding(mark, ref.path, f"'{ref.name}' is not a valid secret name: "
                                          f"{secrets.NAME_RULE}")
            continue
        try:
            value = store.read(ref.name)
        except secrets.MissingSecret:
            how = ("`mailstack secrets SITE` creates it" if ref.kind != "external"
                   else "put it there yourself (it cannot be generated)")
            yield Finding(mark, ref.path, f"secret '{ref.name}' is missing: expected the file "
                                          f"{store.path(ref.name)}; {how}")
            continue
        except InputError as e:
            yield Finding(mark, ref.path, str(e))
            continue
        if ref.name in in_files and value != value.strip():
            yield Finding(mark, ref.path, f"secret '{ref.name}' starts or ends with a space, "
                                          "which Postfix strips from the files it goes into")
        readable.add(ref.name)
    yield from expiry(site, store, readable, now or datetime.datetime.now(datetime.UTC))
    yield from constraints(site, store, readable)


def constraints(site: Site, store: secrets.SecretStore, readable: set[str]) -> Iterator[Finding]:
    """The site CA's name constraints: a warning for a CA without them (made before mailstack
    constrained its CAs; `secrets` never replaces a CA), an error for a host whose name the CA
    may not sign for (its certificate would not verify)."""
    if layout.SECRET_CA_CERT not in readable:
        return
    try:
        permitted = certs.permitted_names(store.read(layout.SECRET_CA_CERT))
    except ValueError:
        return  # the host certificates' check says what is wrong with the files
    anew = (f"move {store.path('tls')} away, run `mailstack secrets SITE` and apply, and hand "
            "out the new CA")
    if permitted is None:
        yield Finding(site.marks.at(("tls", "mode")), ("tls", "mode"),
                      f"{store.path(layout.SECRET_CA_CERT)}: the site CA has no name "
                      "constraints: a device that trusts it would trust any name it signs; "
                      f"for a CA limited to the site's names, {anew}", "warning")
        return
    for key, host in sorted(site.hosts.items()):
        if not certs.within(host.hostname, permitted):
            yield Finding(site.marks.at(("hosts", key, "hostname")), ("hosts", key, "hostname"),
                          f"{host.hostname} is outside the names the site CA may sign for "
                          f"({', '.join(permitted)}): its certificate would not verify; {anew}")


def expiry(site: Site, store: secrets.SecretStore, readable: set[str],
           now: datetime.datetime) -> Iterator[Finding]:
    """Each host certificate (the site CA's; `mailstack secrets --renew` renews it) and, in
    tls.mode files, each chain the public ports serve (the admin's: he puts a renewed one
    there): an error when it has expired, does not name what the site gives the host or does
    not belong to its key; a warning when it expires within ``certs.RENEW_DAYS`` days."""
    renew = "`mailstack secrets SITE --renew`"
    for host in sorted(site.hosts):
        yield from _certificate(site, store, readable, now, host, layout.secret_host_cert(host),
                                None, (f"{renew} renews it", f"{renew} makes one that does"))
    if site.tls.mode == "files":
        for host in secrets.public_hosts(site):
            yield from _certificate(site, store, readable, now, host,
                                    layout.secret_public_cert(host),
                                    layout.secret_public_key(host),
                                    ("put a renewed one there",
                                     "put one there that names them too"))


def _certificate(site: Site, store: secrets.SecretStore, readable: set[str],
                 now: datetime.datetime, host: str, name: str, key_name: str | None,
                 fixes: tuple[str, str]) -> Iterator[Finding]:
    if name not in readable:
        return
    how, fix = fixes
    path = ("hosts", host)
    mark = site.marks.at(path)
    try:
        info = certs.inspect(store.read(name))
    except ValueError:
        yield Finding(mark, path, f"{store.path(name)}: host certificate '{name}' is not "
                                  "a PEM certificate")
        return
    days = certs.days_left(info.not_after, now)
    when = info.not_after.strftime("%Y-%m-%d %H:%M UTC")
    if days < 0:
        yield Finding(mark, path, f"{store.path(name)}: the certificate expired on {when}; "
                                  f"{how}")
    elif days < certs.RENEW_DAYS:
        yield Finding(mark, path, f"{store.path(name)}: the certificate expires on {when}, "
                                  f"{certs.in_days(days)}; {how}",
                      "warning")
    have = {n.lower() for n in info.names}
    lacking = [n for n in web.cert_names(site, host) if n not in have]
    if lacking:
        why = " (clients.serve: mail clients ask those names)" if any(
            n in web.client_names(site) for n in lacking) else ""
        yield Finding(mark, path, f"{store.path(name)}: the certificate does not name "
                                  f"{', '.join(lacking)}{why}; {fix}")
    if key_name is not None and key_name in readable:
        try:
            matches = certs.key_public(store.read(key_name)) == info.public_key
        except (ValueError, TypeError):
            yield Finding(mark, path, f"{store.path(key_name)}: not a PEM private key")
            return
        if not matches:
            yield Finding(mark, path, f"{store.path(name)}: the certificate does not belong to "
                                      f"the key {store.path(key_name)}")
