"""Sizes in the site file: a number of bytes, or a number with a binary unit (``500M``, ``2G``).

One parser for every size the site gives (quotas); ``check`` reports a value it refuses at its
line, and the plan reads bytes only.
"""

from __future__ import annotations

import re

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^([0-9]+) *([KMGT]?)(?:i?B)?$", re.IGNORECASE)


class SizeError(ValueError):
    """A size the site file cannot mean."""


def parse_size(value: int | str) -> int:
    """Bytes of ``value``: ``2G`` is 2 GiB, ``500M`` 500 MiB, ``1024`` 1024 bytes."""
    if isinstance(value, bool):
        raise SizeError("expected a size (bytes, or a number with K, M, G or T), got a boolean")
    if isinstance(value, int):
        if value < 1:
            raise SizeError(f"a size must be at least 1 byte, got {value}")
        return value
    match = _SIZE.match(value.strip())
    if not match:
        raise SizeError(f"'{value}' is not a size: write bytes or a number with K, M, G or T "
                        "(500M, 2G)")
    number = int(match.group(1)) * UNITS[match.group(2).upper()]
    if number < 1:
        raise SizeError(f"a size must be at least 1 byte, got '{value}'")
    return number


def account_quota(site_default: int | str | None, own: int | str | None) -> int | None:
    """An account's quota in bytes: its own, else the site's default, else no limit (None)."""
    value = own if own is not None else site_default
    return None if value is None else parse_size(value)
