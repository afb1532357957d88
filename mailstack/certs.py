"""Certificates made with ``cryptography``: a CA and the server certificates it signs.

One place for the site's internal CA (``mailstack secrets``) and the lab's stand-ins' CAs.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_DAYS = 30
"""A host certificate is due this many days before it expires: `check` warns, `mailstack
secrets --renew` renews it (certbot's window)."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM text."""

    cert: str
    key: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


# a constrained CA signs no certificate for an IP address (RFC 5280: IP SANs are free unless
# an iPAddress subtree is named): every address of both families is excluded
NO_ADDRESSES = (x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                x509.IPAddress(ipaddress.ip_network("::/0")))


def new_ca(common_name: str, names: Sequence[str] = ()) -> KeyPair:
    """A fresh self-signed CA (EC P-256, 10 years). With ``names`` it carries name constraints
    (RFC 5280 4.2.1.10, critical): it can sign certificates only for those DNS names and the
    names below them, and none for an IP address, so a device that trusts a site's CA trusts
    it for the site's own names and nothing else."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    builder = x509.CertificateBuilder()
    if names:
        builder = builder.add_extension(x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(n) for n in dict.fromkeys(names)],
            excluded_subtrees=list(NO_ADDRESSES)), critical=True)
    cert = (builder.subject_name(name).issuer_name(name)
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


def _san(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def issue(ca: KeyPair, names: Sequence[str], *, client: bool = False, key: str | None = None,
          days: int = SERVER_DAYS, now: datetime.datetime | None = None) -> KeyPair:
    """A server certificate for ``names`` (first one is the CN) signed by ``ca``; ``client``
    adds clientAuth (a site host is also a TLS client of the others). ``key`` (PEM) keeps an
    existing private key (a renewal); without it a new EC P-256 key is made."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.encode())
    ca_key = serialization.load_pem_private_key(ca.key.encode(), None)
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key is None:
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        loaded = serialization.load_pem_private_key(key.encode(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("the key is neither an EC nor an RSA key")
        private = loaded
    now = now or _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, *([ExtendedKeyUsageOID.CLIENT_AUTH]
                                                    if client else [])]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM).decode(),
                   key if key is not None else _pem_key(private))


@dataclass(frozen=True)
class CertInfo:
    """What renewal and `check` need to know about a certificate."""

    not_after: datetime.datetime
    serial: int
    names: tuple[str, ...]
    issuer: str
    public_key: bytes  # SubjectPublicKeyInfo, DER


def inspect(pem: str) -> CertInfo:
    """The facts of the first certificate in ``pem``; ValueError if it is not one."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n.value) for n in san)
    except x509.ExtensionNotFound:
        names = tuple(str(a.value) for a in
                      cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return CertInfo(cert.not_valid_after_utc, cert.serial_number, names,
                    cert.issuer.rfc4514_string(),
                    cert.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))


def permitted_names(ca_pem: str) -> tuple[str, ...] | None:
    """The DNS names a CA's name constraints permit, or None when it has no constraints."""
    cert = x509.load_pem_x509_certificate(ca_pem.encode())
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    return tuple(str(n.value) for n in constraints.permitted_subtrees or ()
                 if isinstance(n, x509.DNSName))


def within(name: str, permitted: Iterable[str]) -> bool:
    """Whether the DNS name ``name`` is one of ``permitted`` or below one (RFC 5280's dNSName
    constraint: the name itself and any name with more labels on the left)."""
    name = name.lower().rstrip(".")
    return any(name == p.lower() or name.endswith("." + p.lower().lstrip("."))
               for p in permitted)


def signed_by(pem: str, ca_pem: str) -> bool:
    """Whether the CA certificate ``ca_pem`` signed the certificate ``pem``."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_public(key_pem: str) -> bytes:
    """The SubjectPublicKeyInfo (DER) of a private key in PEM."""
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def days_left(not_after: datetime.datetime, now: datetime.datetime | None = None) -> int:
    """Whole days from ``now`` until ``not_after`` (negative once it has passed)."""
    now = now or datetime.datetime.now(datetime.UTC)
    return (not_after - now) // datetime.timedelta(days=1)


def in_days(days: int) -> str:
    """``in 12 days``, ``in 1 day``, ``within a day``."""
    return "within a day" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
