"""tls.mode acme: the site file's errors, the plan (files, facts, certbot's request, the deploy
hook), the lab's pebble and what verify trusts. The live proof is tests/live/test_acme.py."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mailstack import core, secrets
from mailstack.lab import acme as lab_acme
from mailstack.lab import outside
from mailstack.lab.plan import plan_lab
from mailstack.plan import acme, hosts, layout, web
from mailstack.site.load import load_site
from mailstack.verify import public_ca
from tests.unit.test_site_checks import GOOD, errors_of

ACME = ("tls:\n  mode: acme\n  acme: {server: 'https://acme.lab.test:14000/dir', "
        "email: postmaster@krasnoyarsk.example.org, ca_secret: lab/acme-ca}\n")
HOST = "mail.krasnoyarsk.example.org"


@pytest.fixture
def acme_site(write_site, tmp_path):
    """GOOD in tls.mode acme, its secrets made (the site CA too) and the ACME CA secret."""
    path = write_site(GOOD + ACME)
    site = load_site(path)
    secrets.generate(site, tmp_path / "secrets")
    ca = tmp_path / "secrets" / "lab" / "acme-ca"
    ca.parent.mkdir(exist_ok=True)
    ca.write_text("-----BEGIN CERTIFICATE-----\nacme\n-----END CERTIFICATE-----\n")
    ca.chmod(0o600)
    return path


@pytest.mark.parametrize(("tls", "expected"), [
    ("tls: {mode: acme}\n",
     ["site.yml:13: tls.mode: tls.mode acme needs tls.acme with the server (the ACME directory "
      "URL of the CA, e.g. https://acme-v02.api.letsencrypt.org/directory): mailstack never "
      "picks a CA"]),
    ("tls: {mode: acme, acme: {server: 'http://acme.example/dir'}}\n",
     ["site.yml:13: tls.acme.server: 'http://acme.example/dir' does not match "
      "^https://[^/\\s]+/\\S*$"]),
    ("tls: {mode: acme, acme: {sever: 'https://acme.example/dir'}}\n",
     ["site.yml:13: tls.acme.sever: unknown key; did you mean 'server'?"]),
    ("tls: {mode: acme, acme: {server: 'https://acme.example/dir', email: postmaster}}\n",
     ["site.yml:13: tls.acme.email: 'postmaster' is not a mail address"]),
    ("tls: {mode: internal-ca, acme: {server: 'https://acme.example/dir'}}\n",
     ["site.yml:13: tls.acme: tls.acme is read only with tls.mode acme (mode is internal-ca): "
      "remove it or set mode: acme"]),
])
def test_acme_errors_name_the_key(write_site, tls: str, expected: list[str]) -> None:
    found = errors_of(write_site(GOOD + tls))
    assert [f for f in found if "tls" in f.split(": ")[1]] == expected, found


def test_the_acme_ca_secret_is_an_outside_secret_and_the_site_ca_stays(write_site) -> None:
    site = load_site(write_site(GOOD + ACME))
    refs = {r.name: r.kind for r in secrets.required(site)}
    assert refs["lab/acme-ca"] == "external"
    assert refs[layout.SECRET_CA_CERT] == refs["tls/mail.crt"] == "tls"  # `secrets` makes them


def test_public_ports_read_the_public_certificate(acme_site) -> None:
    _, plan = core.plan(acme_site)
    host = plan.hosts["mail"]
    files = {f.path: f for f in host.files}
    public = layout.public_cert("mail"), layout.public_key("mail")
    main_cf = core.render(acme_site, acme_site.parent / "build") / "mail/etc/postfix/main.cf"
    text = main_cf.read_text()
    assert f"smtpd_tls_cert_file = {public[0]}" in text
    assert f"smtpd_tls_key_file = {public[1]}" in text
    conf = (main_cf.parents[1] / "dovecot" / "dovecot.conf").read_text()
    assert f"ssl_cert = <{public[0]}" in conf and f"ssl_key = <{public[1]}" in conf
    # certbot's certificate is never rendered (the deploy hook writes it); the site CA's host
    # certificate and key still are: the bootstrap, and slapd's (internal) certificate
    assert not set(public) & set(files)
    assert {layout.CA_CERT, layout.host_cert("mail"), layout.host_key("mail"),
            layout.slapd_key("mail")} <= set(files)
    assert "certbot" in host.packages and "nginx-light" in host.packages
    assert {"nginx", "certbot.timer"} <= set(host.facts["other_services"])


def test_the_plan_requests_the_host_s_names_from_the_site_s_server_only(acme_site) -> None:
    _, plan = core.plan(acme_site)
    facts = plan.hosts["mail"].facts["acme"]
    argv = facts["certonly"]
    assert argv[:2] == ["certbot", "certonly"]
    assert argv[argv.index("--server") + 1] == "https://acme.lab.test:14000/dir"
    assert argv[argv.index("--webroot-path") + 1] == web.ACME_ROOT
    assert argv[argv.index("--deploy-hook") + 1] == acme.HOOK
    assert argv[argv.index("--cert-name") + 1] == HOST
    assert "--keep-until-expiring" in argv and "--non-interactive" in argv
    # GOOD serves no client settings: the host name alone
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-d"] == [HOST] == facts["names"]
    assert facts["environment"] == {"REQUESTS_CA_BUNDLE": acme.SERVER_CA}
    assert facts["lineage_cert"] == f"/etc/letsencrypt/live/{HOST}/cert.pem"
    assert facts["bootstrap"] == {"cert": layout.host_cert("mail"), "key": layout.host_key("mail")}
    assert facts["cert"] == layout.public_cert("mail") and facts["webroot"] == web.ACME_ROOT
    # no client settings: nginx's own port-80 site replaces Debian's default site
    assert facts["remove"] == [web.DEBIAN_DEFAULT_SITE]


def test_files_hook_and_certbot_service_environment(acme_site) -> None:
    _, plan = core.plan(acme_site)
    files = {f.path: f for f in plan.hosts["mail"].files}
    assert files[acme.HOOK].mode == 0o755 and files[acme.HOOK].pickup == "none"
    assert files[acme.NGINX_SITE].pickup == "nginx"
    assert files[acme.DROP_IN].pickup == "systemd"
    out = core.render(acme_site, acme_site.parent / "build") / "mail"
    hook = (out / acme.HOOK.lstrip("/")).read_text()
    assert hook.startswith("#!/bin/sh\n") and "set -eu" in hook
    assert f'mv -f "{layout.public_key("mail")}.new" "{layout.public_key("mail")}"' in hook
    assert f'"$lineage/fullchain.pem" "{layout.public_cert("mail")}.new"' in hook
    reloads = [line.split()[-1] for line in hook.splitlines() if "try-reload" in line]
    assert reloads == ["postfix", "dovecot", "nginx"]  # never slapd: LDAP keeps the site CA
    assert (out / acme.SERVER_CA.lstrip("/")).read_text().startswith("-----BEGIN CERTIFICATE")
    assert f"Environment = REQUESTS_CA_BUNDLE={acme.SERVER_CA}" in (
        out / acme.DROP_IN.lstrip("/")).read_text()
    nginx = (out / acme.NGINX_SITE.lstrip("/")).read_text()
    assert f"root {web.ACME_ROOT};" in nginx and "listen 80 default_server;" in nginx


def test_client_settings_host_keeps_its_own_nginx_site(acme_site) -> None:
    text = acme_site.read_text() + "clients: {serve: true}\n"
    acme_site.write_text(text)
    _, plan = core.plan(acme_site)
    host = plan.hosts["mail"]
    assert acme.NGINX_SITE not in {f.path for f in host.files}
    assert host.facts["acme"]["remove"] == []
    assert host.facts["acme"]["names"] == [HOST, "autoconfig.krasnoyarsk.example.org",
                                           "autodiscover.krasnoyarsk.example.org"]
    nginx = next(f for f in host.files if f.path == web.NGINX_SITE)
    assert nginx.data["cert"] == layout.public_cert("mail")
    assert host.packages.count("nginx-light") == 1 and host.services.count("nginx") == 1


def test_other_modes_are_unchanged(example) -> None:
    site, plan = core.plan(example)
    host = plan.hosts["mail"]
    assert "acme" not in host.facts and "certbot" not in host.packages
    assert not {acme.HOOK, acme.NGINX_SITE, acme.DROP_IN} & {f.path for f in host.files}
    assert acme.facts(site, "mail") == {} and acme.files(site, "mail", {}) == []


def test_an_ldap_only_host_gets_no_acme_certificate(write_site, tmp_path) -> None:
    text = GOOD.replace(
        'roles: [ldap, mta, imap]}\nldap: {base: "dc=krasnoyarsk,dc=example,dc=org"}',
        'roles: [mta, imap]}\n  dir: {hostname: dir.krasnoyarsk.example.org, roles: [ldap]}\n'
        'ldap: {base: "dc=krasnoyarsk,dc=example,dc=org"}') + ACME
    site = load_site(write_site(text))
    assert acme.acme_host(site, "mail") and not acme.acme_host(site, "dir")
    assert acme.facts(site, "dir") == {} and "certbot" not in hosts.packages(site, "dir")


def test_the_lab_runs_pebble_in_the_client_under_the_server_s_name(write_site) -> None:
    site = load_site(write_site(GOOD + ACME))
    lab = plan_lab(site)
    assert lab.client.aliases == ("acme.lab.test",)
    config = lab_acme.pebble_config()["pebble"]
    assert config["httpPort"] == 80 and config["listenAddress"] == f"0.0.0.0:{lab_acme.PORT}"
    unit = lab_acme.unit(lab.gateway)
    assert f"-dnsserver {lab.gateway}:53" in unit
    assert "PEBBLE_VA_NOSLEEP=1" in unit and "PEBBLE_WFE_NONCEREJECT=0" in unit
    [needed] = [s for s in outside.outside_secrets(site, lab) if s.name == "lab/acme-ca"]
    assert needed.kind == "ca" and needed.fixtures == (outside.ACME,)
    json.dumps(config)


def test_the_lab_refuses_a_real_acme_server(write_site) -> None:
    real = ACME.replace("acme.lab.test:14000", "acme-v02.api.letsencrypt.org")
    site = load_site(write_site(GOOD + real))
    with pytest.raises(Exception, match=r"tls\.acme\.server: the ACME server "
                                        r"acme-v02\.api\.letsencrypt\.org is not a reserved"):
        plan_lab(site)


def test_verify_trusts_the_acme_ca_on_public_ports(acme_site) -> None:
    site = load_site(acme_site)
    values = {layout.SECRET_CA_CERT: "site CA"}
    assert public_ca(site, values, None) is None  # real servers: the system's CAs
    internal = dataclasses.replace(site, tls=dataclasses.replace(site.tls, mode="internal-ca"))
    assert public_ca(internal, values, None) == "site CA"
