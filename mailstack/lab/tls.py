"""Certificates of the lab's stand-ins for the outside world, made on this machine with
``cryptography`` (nothing runs in a container for them).

Each stand-in (a relay container, the provider) has its own CA, like real servers that are
run by different people: ``build/<site>/lab-ca/<id>-ca.{crt,key}``. That folder outlives
``lab down`` on purpose: the site's secrets folder may hold a CA certificate the lab made from
it (``lab/head-office-ca``), and a new CA at the next ``lab up`` would no longer match it.

The server certificate a stand-in presents is issued by its CA for all its names (host names
as DNS entries, addresses as IP entries) and kept in ``build/<site>/lab/<id>.{crt,key}``; it is
issued again only when it is missing, names other names, or is not signed by the CA.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from mailstack.certs import KeyPair, _san, issue, new_ca
from mailstack.lab.state import write_atomic

__all__ = [
    "CA_DIR",
    "KeyPair",
    "ca_dir",
    "certificates_in",
    "ensure_ca",
    "ensure_server_cert",
    "issue",
    "new_ca",
    "signed_by",
]

CA_DIR = "lab-ca"
CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)


def ca_dir(build_dir: str | os.PathLike[str], site: str) -> Path:
    """``BUILD_DIR/<site>/lab-ca``, absolute."""
    return (Path(build_dir) / site / CA_DIR).absolute()


def ensure_ca(where: Path, ident: str, common_name: str) -> KeyPair:
    """The CA ``where/<ident>-ca.{crt,key}``, made when either file is missing."""
    crt, key = where / f"{ident}-ca.crt", where / f"{ident}-ca.key"
    if crt.is_file() and key.is_file():
        return KeyPair(crt.read_text(encoding="utf-8"), key.read_text(encoding="utf-8"))
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o700)
    pair = new_ca(common_name)
    write_atomic(key, pair.key, 0o600)
    write_atomic(crt, pair.cert, 0o644)
    return pair


def certificates_in(pem: str) -> list[x509.Certificate]:
    """Every certificate in a PEM text (a CA file may be a bundle); [] when there is none."""
    try:
        return list(x509.load_pem_x509_certificates(pem.encode()))
    except ValueError:
        return []


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _usable(pair: KeyPair, ca: KeyPair, names: Sequence[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(pair.cert.encode())
        key = serialization.load_pem_private_key(pair.key.encode(), None)
    except ValueError:
        return False
    if key.public_key() != cert.public_key():
        return False
    if not signed_by(cert, x509.load_pem_x509_certificate(ca.cert.encode())):
        return False
    after = getattr(cert, "not_valid_after_utc", None)  # cryptography >= 42
    if after is None:
        after = cert.not_valid_after.replace(tzinfo=datetime.UTC)
    if after - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return list(san) == _san(names)


def ensure_server_cert(where: Path, ident: str, ca: KeyPair, names: Sequence[str]) -> KeyPair:
    """``where/<ident>.{crt,key}``: kept when it is ``ca``'s certificate for ``names``."""
    crt, key = where / f"{ident}.crt", where / f"{ident}.key"
    if crt.is_file() and key.is_file():
        pair = KeyPair(crt.read_text(encoding="utf-8"), key.read_text(encoding="utf-8"))
        if _usable(pair, ca, names):
            return pair
    pair = issue(ca, names)
    write_atomic(key, pair.key, 0o600)
    write_atomic(crt, pair.cert, 0o644)
    return pair
