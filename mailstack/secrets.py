"""The secrets folder beside a site file: what a site needs, reading it safely, making it.

Each secret is one file below ``<site dir>/secrets/`` (or ``--secrets DIR``), mode 0600 (or
0400), or an ansible-vault encrypted file (decrypted with ``ansible-vault`` and the password
file named by ``ANSIBLE_VAULT_PASSWORD_FILE``). Nothing here overwrites a secret, except
:func:`renew`, which replaces host certificates that are due (the admin's ``--renew``).
"""

from __future__ import annotations

import datetime
import os
import re
import secrets as random
import stat
import string
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mailstack import certs
from mailstack.errors import InputError
from mailstack.plan import layout, web
from mailstack.site.marks import Path as KeyPath
from mailstack.site.model import Site

_NAME = re.compile(r"[A-Za-z0-9@._+-]+(/[A-Za-z0-9@._+-]+)*\Z")
NAME_RULE = ("a path below the secrets folder of letters, digits, @._+- and /, without '..' (no "
             "absolute paths)")
VAULT_HEADER = "$ANSIBLE_VAULT;"
Kind = Literal["password", "tls", "external"]


@dataclass(frozen=True)
class SecretRef:
    """A secret the site needs: its file name, how it comes to exist, where it is asked for."""

    name: str
    kind: Kind
    path: KeyPath


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name)) and ".." not in name.split("/")


def ca_names(site: Site) -> tuple[str, ...]:
    """The names a new site CA is constrained to: the mail domains, and each host name that is
    not below one of them (the CA can then sign for nothing else)."""
    names = [d.lower() for d in site.domains]
    for _, host in sorted(site.hosts.items()):
        if not certs.within(host.hostname, names):
            names.append(host.hostname.lower())
    return tuple(dict.fromkeys(names))


def default_dir(site_file: str | os.PathLike[str]) -> Path:
    return Path(site_file).resolve().parent / "secrets"


def public_hosts(site: Site) -> list[str]:
    """The hosts with public TLS ports (the mta or imap role)."""
    return [k for k, h in sorted(site.hosts.items()) if {"mta", "imap"} & set(h.roles)]


def required(site: Site) -> list[SecretRef]:
    """Every secret the site's render needs, in a stable order."""
    refs = [SecretRef(layout.SECRET_LDAP_ADMIN, "password", ("ldap", "root_password"))
            ] if site.ldap.root_password else []
    refs += [SecretRef(layout.secret_service(s), "password", ("ldap",)) for s in layout.SERVICE_ACCOUNTS]
    for i, account in enumerate(site.accounts):
        name = layout.account_secret(account)
        refs.append(SecretRef(name, "password", ("accounts", i, "password_secret")
                              if account.password_secret else ("accounts", i, "mail")))
    for rname, relay in sorted(site.relays.items()):
        if relay.auth:
            refs.append(SecretRef(relay.auth.password_secret, "external",
                                  ("relays", rname, "auth", "password_secret")))
        if relay.ca_secret:
            refs.append(SecretRef(relay.ca_secret, "external", ("relays", rname, "ca_secret")))
    for i, fetch in enumerate(site.fetch):
        refs.append(SecretRef(fetch.password_secret, "external", ("fetch", i, "password_secret")))
        if fetch.ca_secret:
            refs.append(SecretRef(fetch.ca_secret, "external", ("fetch", i, "ca_secret")))
    if site.tls.mode == "acme" and site.tls.acme and site.tls.acme.ca_secret:
        refs.append(SecretRef(site.tls.acme.ca_secret, "external", ("tls", "acme", "ca_secret")))
    # every mode keeps the site CA: it signs the internal hops (LDAP), and in acme serves until
    # certbot's certificate is there
    refs.append(SecretRef(layout.SECRET_CA_CERT, "tls", ("tls", "mode")))
    for host in sorted(site.hosts):
        refs.append(SecretRef(layout.secret_host_cert(host), "tls", ("hosts", host)))
        refs.append(SecretRef(layout.secret_host_key(host), "tls", ("hosts", host)))
    for host in public_hosts(site) if site.tls.mode == "files" else ():
        refs.append(SecretRef(layout.secret_public_cert(host), "external", ("tls", "mode")))
        refs.append(SecretRef(layout.secret_public_key(host), "external", ("tls", "mode")))
    unique: dict[str, SecretRef] = {}
    for ref in refs:
        unique.setdefault(ref.name, ref)  # one secret may serve a relay and a remote mailbox
    return list(unique.values())


class SecretStore:
    """Read-only access to a secrets folder, refusing files others can read."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self._cache: dict[str, str] = {}

    def path(self, name: str) -> Path:
        if not valid_name(name):
            raise InputError(f"{name!r} is not a valid secret name: {NAME_RULE}")
        return self.root / name

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def read(self, name: str) -> str:
        if name in self._cache:
            return self._cache[name]
        if not valid_name(name):
            raise InputError(f"{name!r} is not a valid secret name: {NAME_RULE}")
        path = os.path.join(self._root, name)  # a string: pathlib costs more than the read
        try:
            # one open and one fstat per secret: a site of 10,000 accounts reads 10,000
            # (os.read, not a text file object: at 10,000 accounts the object costs more than
            # the read; newlines are translated as text mode does)
            fd = os.open(path, os.O_RDONLY)
            try:
                st = os.fstat(fd)
                mode = stat.S_IMODE(st.st_mode)
                chunks = [os.read(fd, st.st_size + 1)]
                while chunks[-1]:
                    chunks.append(os.read(fd, 1 << 16))
            finally:
                os.close(fd)
            raw = b"".join(chunks).decode("utf-8")
            if "\r" in raw:
                raw = raw.replace("\r\n", "\n").replace("\r", "\n")
        except FileNotFoundError:
            raise MissingSecret(f"{path}: secret '{name}' is missing "
                                "(`mailstack secrets SITE` creates what can be generated)"
                                ) from None
        except (OSError, UnicodeDecodeError) as err:
            why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise InputError(f"{path}: cannot read secret '{name}': {why}") from None
        if raw.startswith(VAULT_HEADER):
            value = _vault_decrypt(Path(path))
        else:
            if mode & 0o077:
                raise InputError(f"{path}: secret '{name}' has mode {mode:04o}; others can read "
                                 f"it: chmod 600 {path} (or encrypt it with ansible-vault)")
            value = raw
        pem = value.startswith("-----BEGIN ")  # certificates and keys keep their lines
        value = value[:-1] if value.endswith("\n") and not pem else value
        if not pem and any(c in value for c in "\n\r\x00"):
            raise InputError(f"{path}: secret '{name}' contains a line break or NUL, which "
                             "would break the configuration files it goes into")
        self._cache[name] = value
        return value


class MissingSecret(InputError):
    """The secret's file does not exist."""


def _vault_decrypt(path: Path) -> str:
    if not os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE"):
        raise InputError(f"{path}: is ansible-vault encrypted; set ANSIBLE_VAULT_PASSWORD_FILE")
    try:
        out = subprocess.run(["ansible-vault", "view", str(path)], capture_output=True,
                             text=True, check=False, timeout=60)
    except FileNotFoundError:
        raise InputError(f"{path}: is ansible-vault encrypted, but ansible-vault is not installed") \
            from None
    if out.returncode != 0:
        raise InputError(f"{path}: ansible-vault could not decrypt it: {out.stderr.strip()}")
    return out.stdout


def missing(site: Site, store: SecretStore) -> list[SecretRef]:
    return [ref for ref in required(site) if not store.exists(ref.name)]


def _write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_new(path: Path, value: str) -> None:
    """A new secret file (0600, its folders 0700), never over an existing one."""
    _write_new(path, (value + "\n").encode())


def new_password(length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(random.choice(alphabet) for _ in range(length))


def generate(site: Site, root: str | Path) -> list[str]:
    """Create every missing secret that can be generated; never overwrite. Returns names made."""
    store = SecretStore(root)
    made: list[str] = []
    todo = missing(site, store)
    for ref in todo:
        if ref.kind == "password":
            _write_new(store.path(ref.name), (new_password() + "\n").encode())
            made.append(ref.name)
    tls_names = {ref.name for ref in todo if ref.kind == "tls"}
    if tls_names:
        made += _make_tls(site, store, tls_names)
    return made


def _make_tls(site: Site, store: SecretStore, todo: set[str]) -> list[str]:
    made: list[str] = []
    if layout.SECRET_CA_CERT in todo:
        if store.exists(layout.SECRET_CA_KEY):
            raise InputError(f"{store.path(layout.SECRET_CA_KEY)}: a CA key exists without its "
                             "certificate; restore tls/ca.crt or remove the key to start over")
        pair = certs.new_ca(f"mailstack {site.site} CA", ca_names(site))
        _write_new(store.path(layout.SECRET_CA_KEY), pair.key.encode())
        _write_new(store.path(layout.SECRET_CA_CERT), pair.cert.encode())
        made += [layout.SECRET_CA_KEY, layout.SECRET_CA_CERT]
    ca = certs.KeyPair(store.path(layout.SECRET_CA_CERT).read_text(encoding="utf-8"),
                       store.path(layout.SECRET_CA_KEY).read_text(encoding="utf-8"))
    for host_name in sorted(site.hosts):
        cert_name, key_name = layout.secret_host_cert(host_name), layout.secret_host_key(host_name)
        if cert_name not in todo and key_name not in todo:
            continue
        if store.exists(key_name) or store.exists(cert_name):
            raise InputError(f"{store.root}: only one of {cert_name} and {key_name} exists; "
                             "restore the other or remove both to make a new pair")
        pair = certs.issue(ca, list(web.cert_names(site, host_name)), client=True)
        _write_new(store.path(key_name), pair.key.encode())
        _write_new(store.path(cert_name), pair.cert.encode())
        made += [key_name, cert_name]
    return made


def describe_missing(refs: Iterable[SecretRef], store: SecretStore) -> list[str]:
    return [f"{store.path(r.name)}: {r.kind} secret '{r.name}' is missing" for r in refs]


@dataclass(frozen=True)
class Renewal:
    """One host certificate `renew` looked at: whether it renewed it, why, and the dates."""

    host: str
    path: Path
    renewed: bool
    reason: str
    not_after: datetime.datetime  # of the certificate now in the file


def _due(info: certs.CertInfo, want: list[str], ca_ok: bool, key_ok: bool,
         now: datetime.datetime) -> str:
    """Why a host certificate must be renewed, or "" when it need not be."""
    days = certs.days_left(info.not_after, now)
    when = info.not_after.strftime("%Y-%m-%d %H:%M UTC")
    if days < 0:
        return f"it expired on {when}"
    if not ca_ok:
        return "the site CA did not sign it"
    if not key_ok:
        return "it does not belong to the host's key"
    if sorted(info.names) != sorted(want):
        return f"it names {', '.join(info.names)}, the site {', '.join(want)}"
    if days < certs.RENEW_DAYS:
        return f"it expires on {when}, {certs.in_days(days)}"
    return ""


def renew(site: Site, root: str | Path, *,
          now: datetime.datetime | None = None) -> list[Renewal]:
    """Renew, from the site CA, every host certificate that is due: expired, expiring within
    ``certs.RENEW_DAYS`` days, not signed by the site CA, not matching its key, or naming other
    names than the site gives the host. The host's key is kept (pins such as DANE ``3 1 1``
    records stay valid, and the key never has to move). Each certificate file is replaced
    atomically, 0600. Returns one entry per host, renewed or not."""
    store = SecretStore(root)
    now = now or datetime.datetime.now(datetime.UTC)
    ca = certs.KeyPair(store.read(layout.SECRET_CA_CERT), store.read(layout.SECRET_CA_KEY))
    out: list[Renewal] = []
    for host_name in sorted(site.hosts):
        cert_name = layout.secret_host_cert(host_name)
        key_name = layout.secret_host_key(host_name)
        path = store.path(cert_name)
        if path.read_text(encoding="utf-8").startswith(VAULT_HEADER):
            raise InputError(f"{path}: is ansible-vault encrypted; renew writes a plain "
                             "certificate: decrypt it first (`ansible-vault decrypt`)")
        pem, key = store.read(cert_name), store.read(key_name)
        try:
            info = certs.inspect(pem)
        except ValueError as err:
            raise InputError(f"{path}: not a PEM certificate ({err})") from None
        try:
            key_ok = certs.key_public(key) == info.public_key
        except (ValueError, TypeError) as err:
            raise InputError(f"{store.path(key_name)}: not a PEM private key ({err})") from None
        want = list(web.cert_names(site, host_name))
        reason = _due(info, want, certs.signed_by(pem, ca.cert), key_ok, now)
        if not reason:
            out.append(Renewal(host_name, path, False, "", info.not_after))
            continue
        if not key_ok:
            raise InputError(f"{path}: it does not belong to {store.path(key_name)}; remove both "
                             "to make a new pair with `mailstack secrets SITE`")
        pair = certs.issue(ca, want, client=True, key=key)
        replace_file(path, pair.cert.encode())
        out.append(Renewal(host_name, path, True, reason, certs.inspect(pair.cert).not_after))
    return out


def replace_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` anew atomically (a temporary file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
