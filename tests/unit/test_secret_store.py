"""SecretStore.read: a secret file as text mode would read it, refused when others can read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack.errors import InputError
from mailstack.secrets import MissingSecret, SecretStore


def put(root: Path, name: str, data: bytes, mode: int = 0o600) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def test_one_trailing_newline_goes_and_windows_line_ends_read_as_text_mode_does(
        tmp_path: Path) -> None:
    put(tmp_path, "ldap/admin", b"s3cret\n")
    put(tmp_path, "ldap/dovecot", b"s3cret\r\n")
    put(tmp_path, "ldap/postfix", b"s3cret")
    big = b"-----BEGIN CERTIFICATE-----\r\n" + b"A" * 200_000 + b"\r\n-----END CERTIFICATE-----\r\n"
    put(tmp_path, "tls/ca.crt", big)
    store = SecretStore(tmp_path)
    assert store.read("ldap/admin") == store.read("ldap/dovecot") == \
        store.read("ldap/postfix") == "s3cret"
    assert store.read("tls/ca.crt") == big.decode().replace("\r\n", "\n")


def test_unreadable_or_shared_or_broken_secrets_are_refused(tmp_path: Path) -> None:
    put(tmp_path, "ldap/admin", b"s3cret\n", 0o644)
    put(tmp_path, "ldap/dovecot", b"two\nlines\n")
    put(tmp_path, "ldap/postfix", b"\xff\xfe")
    store = SecretStore(tmp_path)
    with pytest.raises(InputError, match="mode 0644; others can read it"):
        store.read("ldap/admin")
    with pytest.raises(InputError, match="line break or NUL"):
        store.read("ldap/dovecot")
    with pytest.raises(InputError, match="not UTF-8 text"):
        store.read("ldap/postfix")
    with pytest.raises(MissingSecret):
        store.read("ldap/nobody")
