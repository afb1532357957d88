"""mailstack: one declarative site file to a proven Postfix + Dovecot + OpenLDAP stack."""

__version__ = "0.1.0"
