"""Secrets: every secret the site refers to exists and is readable only by its owner."""

from __future__ import annotations

from collections.abc import Iterator

from mailstack import secrets
from mailstack.errors import InputError
from mailstack.findings import Finding
from mailstack.plan import layout
from mailstack.site.model import Site


def check(site: Site, store: secrets.SecretStore) -> Iterator[Finding]:
    # written into Postfix's LDAP tables and SASL maps, which strip the spaces around a value
    # and cannot quote (Dovecot's files quote them; the others are read whole or by ldappasswd)
    in_files = {layout.secret_service("postfix")} | {
        r.auth.password_secret for r in site.relays.values() if r.auth}
    for ref in secrets.required(site):
        mark = site.marks.at(ref.path)
        if not secrets.valid_name(ref.name):
            yield Finding(mark, ref.path, f"'{ref.name}' is not a valid secret name: "
                                          f"{secrets.NAME_RULE}")
            continue
        if not store.exists(ref.name):
            how = ("`mailstack secrets SITE` creates it" if ref.kind != "external"
                   else "put it there yourself (it cannot be generated)")
            yield Finding(mark, ref.path, f"secret '{ref.name}' is missing: expected the file "
                                          f"{store.path(ref.name)}; {how}")
            continue
        try:
            value = store.read(ref.name)
        except InputError as e:
            yield Finding(mark, ref.path, str(e))
            continue
        if ref.name in in_files and value != value.strip():
            yield Finding(mark, ref.path, f"secret '{ref.name}' starts or ends with a space, "
                                          "which Postfix strips from the files it goes into")
