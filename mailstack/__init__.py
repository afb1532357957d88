"""mailstack: one declarative site file to a proven Postfix + Dovecot + OpenLDAP stack."""

__version__ = "0.2.0"
"""The one place of the version (pyproject.toml reads it; CHANGELOG.md says what changed)."""
