"""Checks: each module's ``check(site, store)`` yields findings; ``run`` runs them all.

Structural checks (names, DNs, relays) run first; checks that need a well-formed site (the
secrets it names, the ACL model) only run when those found no error.
"""

from __future__ import annotations

from mailstack.findings import Finding, sort_findings
from mailstack.secrets import SecretStore
from mailstack.site.model import Site


def run(site: Site, store: SecretStore | None) -> list[Finding]:
    from mailstack.checks import acl, acme, bans, contexts, folders, groups, names, relay, secrets, sieve

    findings: list[Finding] = []
    for module in (names, relay, acme, contexts, bans, groups, folders, sieve):
        findings += module.check(site)
    findings += relay.check_routes(site)
    if not any(f.severity == "error" for f in findings):
        # only for a well-formed site: secret names derive from its addresses
        if store is not None:
            findings += secrets.check(site, store)
        findings += acl.check(site)
    return sort_findings(findings)
