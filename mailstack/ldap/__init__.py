"""LDAP helpers: DNs (RFC 4514), filters (RFC 4515), LDIF (RFC 2849), the live directory."""
