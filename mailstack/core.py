"""The verbs, as library functions; ``cli.py`` only parses arguments and calls these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailstack import checks, secrets
from mailstack.errors import InputError
from mailstack.findings import Finding, raise_errors
from mailstack.plan import SitePlan, plan_site
from mailstack.site.load import load_site
from mailstack.site.model import Site


@dataclass
class CheckReport:
    site: Site
    findings: list[Finding]
    daemon_verdicts: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings) and all(
            v.ok for v in self.daemon_verdicts)


def _store(site_file: str | Path, secrets_dir: str | Path | None) -> secrets.SecretStore:
    return secrets.SecretStore(secrets_dir or secrets.default_dir(site_file))


def check(site_file: str | Path, *, secrets_dir: str | Path | None = None,
          with_daemons: bool = False) -> CheckReport:
    """Load and check a site; with ``with_daemons``, also run the daemons' own checkers."""
    site = load_site(site_file)
    store = _store(site_file, secrets_dir)
    report = CheckReport(site, checks.run(site, store))
    if with_daemons and report.ok:
        from mailstack import daemons

        plan = plan_site(site, _secret_values(site, store))
        from mailstack import render as rendering

        report.daemon_verdicts = daemons.check_plan(site, plan, rendering.render_plan(plan),
                                                    _secret_values(site, store))
    return report


def _secret_values(site: Site, store: secrets.SecretStore) -> dict[str, str]:
    return {ref.name: store.read(ref.name) for ref in secrets.required(site)}


def plan(site_file: str | Path, *, secrets_dir: str | Path | None = None) -> tuple[Site, SitePlan]:
    """Load, check (errors stop here) and plan a site."""
    site = load_site(site_file)
    store = _store(site_file, secrets_dir)
    raise_errors(checks.run(site, store))
    return site, plan_site(site, _secret_values(site, store))


def render(site_file: str | Path, out_dir: str | Path = "build", *,
           secrets_dir: str | Path | None = None) -> Path:
    """Render every file of every host into ``out_dir/<site>/`` atomically; returns that path."""
    _, site_plan = plan(site_file, secrets_dir=secrets_dir)
    from mailstack import render as rendering  # Jinja: only the verbs that render import it

    rendered = rendering.render_plan(site_plan)
    return rendering.write_tree(site_plan, rendered, Path(out_dir))


@dataclass
class SecretsReport:
    directory: Path
    created: list[str]
    missing_external: list[str]
    renewals: list[secrets.Renewal] = field(default_factory=list)


def make_secrets(site_file: str | Path, *, secrets_dir: str | Path | None = None,
                 renew: bool = False) -> SecretsReport:
    """Create every missing secret that can be generated; never overwrite one. With ``renew``,
    also renew the host certificates that are due from the site CA (keeping their keys)."""
    from mailstack.checks import contexts

    site = load_site(site_file)
    raise_errors(contexts.secret_names(site))  # names are paths: refused before any is made
    directory = Path(secrets_dir) if secrets_dir else secrets.default_dir(site_file)
    created = secrets.generate(site, directory)
    store = secrets.SecretStore(directory)
    external = [str(store.path(r.name)) for r in secrets.missing(site, store)]
    if not site.hosts:
        raise InputError(f"{site_file}: the site has no hosts")
    renewals = secrets.renew(site, directory) if renew else []
    return SecretsReport(directory, created, external, renewals)


def routes(site_file: str | Path, sender: str, rcpt: str) -> str:
    """Which way a message from ``sender`` to ``rcpt`` goes, from the rendered tables' data."""
    from mailstack.checks.names import valid_address
    from mailstack.plan import relays

    site = load_site(site_file)
    raise_errors(f for f in checks.run(site, None) if f.severity == "error")
    for label, address in (("--from", sender), ("--to", rcpt)):
        if not valid_address(address):
            raise InputError(f"{label} {address!r} is not a valid mail address")
    return relays.decide(site, sender, rcpt).describe()


CLIENT_FORMATS = ("text", "html", "autoconfig", "autodiscover", "mobileconfig")


def client_settings(site_file: str | Path, user: str | None = None, *, fmt: str = "text",
                    secrets_dir: str | Path | None = None) -> bytes:
    """What a mail client needs, for one account (``user``) or the site's first domain:
    ``fmt`` text, html (the sheet to hand out), autoconfig (Mozilla's config-v1.1.xml),
    autodiscover (Outlook's answer) or mobileconfig (Apple's profile; needs ``user``)."""
    from mailstack import clients
    from mailstack.plan import clients as client_plan
    from mailstack.plan import layout

    if fmt not in CLIENT_FORMATS:
        raise InputError(f"--format {fmt}: use one of {', '.join(CLIENT_FORMATS)}")
    site = load_site(site_file)
    store = _store(site_file, secrets_dir)
    raise_errors(f for f in checks.run(site, None) if f.severity == "error")
    settings = client_plan.settings(site, user)
    ca_pem = None
    if settings.internal_ca and fmt in ("html", "mobileconfig"):
        if not store.exists(layout.SECRET_CA_CERT):
            raise InputError(f"{store.path(layout.SECRET_CA_CERT)}: missing; run "
                             f"`mailstack secrets {site_file}` first")
        ca_pem = store.read(layout.SECRET_CA_CERT)
    if fmt == "text":
        return clients.text(settings).encode()
    if fmt == "html":
        return clients.html(settings, ca_pem).encode()
    if fmt == "autoconfig":
        return clients.autoconfig(client_plan.domain_settings(site, settings.domain))
    if fmt == "autodiscover":
        if user is None:
            raise InputError("--format autodiscover answers for one account: name its address")
        return clients.autodiscover(settings, settings.address or user)
    return clients.mobileconfig(settings, ca_pem)


def write_file(path: str | Path, data: bytes) -> None:
    """Write an output file atomically (0644: nothing in it is secret)."""
    try:
        secrets.replace_file(Path(path), data, 0o644)
    except OSError as err:
        raise InputError(f"{path}: cannot write: {err.strerror or err}") from None
