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
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM text."""

    cert: str
    key: str


def ca_dir(build_dir: str | Path, site: str) -> Path:
    """``BUILD_DIR/<site>/lab-ca``, absolute."""
    return (Path(build_dir) / site / CA_DIR).absolute()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def new_ca(common_name: str) -> KeyPair:
    """A fresh self-signed CA (EC P-256, 10 years)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


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


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def issue(ca: KeyPair, names: Sequence[str]) -> KeyPair:
    """A server certificate for ``names`` (first one is the CN) signed by ``ca``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.encode())
    ca_key = serialization.load_pem_private_key(ca.key.encode(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


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
