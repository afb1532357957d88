"""Brute force: fail2ban's jails and the daemons' rate limits as data; the site's ban options."""

from __future__ import annotations

import configparser
from dataclasses import replace

import pytest

from mailstack import core
from mailstack.plan import dovecot, fail2ban, hosts, postfix, slapd
from mailstack.site.load import load_site
from tests.unit.test_site_checks import GOOD, errors_of


def rendered_ini(example, tmp_path, path: str) -> configparser.ConfigParser:
    tree = core.render(example, tmp_path / "build")
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string((tree / "mail" / path.lstrip("/")).read_text())
    return ini


def test_the_example_gets_a_jail_per_service_a_password_is_guessed_on(example, tmp_path) -> None:
    ini = rendered_ini(example, tmp_path, fail2ban.JAIL_LOCAL)
    # no slapd jail: slapd listens on ldapi only (plan/slapd.serves_network)
    assert ini.sections() == ["sshd", "postfix-sasl", "dovecot"]
    assert {s: ini[s]["port"] for s in ini.sections()} == {
        "sshd": "22", "postfix-sasl": "25,465,587", "dovecot": "143,993,110,995"}
    assert all(ini[s]["enabled"] == "true" for s in ini.sections())
    # Debian 12: no rsyslog (the journal), Postfix's daemons in postfix@-.service, nftables
    d = ini.defaults()
    assert (d["backend"], d["banaction"]) == ("systemd", "nftables-multiport")
    assert ini["postfix-sasl"]["journalmatch"] == "_SYSTEMD_UNIT=postfix@-.service"
    assert "journalmatch" not in ini["dovecot"]  # the stock filter's dovecot.service is right
    assert (d["maxretry"], d["findtime"], d["bantime"]) == ("10", "10m", "1h")
    # loopback and the head office's relay (named by IP) are never banned
    assert d["ignoreip"] == "127.0.0.0/8 ::1/128 192.0.2.1/32"
    assert d["ignoreself"] == "true"


def test_fail2ban_and_what_it_needs_are_installed_and_run_on_every_host(example) -> None:
    site = load_site(example)
    assert set(fail2ban.PACKAGES) <= set(hosts.packages(site, "mail"))
    assert "fail2ban" in hosts.services(site, "mail")
    plan = core.plan(example)[1].hosts["mail"]
    assert plan.facts["fail2ban"] == {
        "jails": ["dovecot", "postfix-sasl", "sshd"],
        "units": {"postfix-sasl": "postfix@-.service"}}
    assert "fail2ban" in plan.facts["other_services"]  # base starts it, no daemon role does
    placed = {f.path: (f.role, f.pickup) for f in plan.files if f.path.startswith("/etc/fail2")}
    assert placed == {fail2ban.JAIL_LOCAL: ("base", "fail2ban"),
                      fail2ban.FAIL2BAN_LOCAL: ("base", "fail2ban")}


def test_a_jail_exists_only_where_its_daemon_does(example) -> None:
    site = load_site(example)
    only_mta = replace(site, hosts={"mail": replace(site.hosts["mail"], roles=("mta",))})
    assert fail2ban.jail_names(only_mta, "mail") == ["postfix-sasl", "sshd"]
    only_imap = replace(site, hosts={"mail": replace(site.hosts["mail"], roles=("imap",))})
    assert fail2ban.jail_names(only_imap, "mail") == ["dovecot", "sshd"]


def test_the_slapd_jail_follows_where_slapd_listens(example) -> None:
    site = load_site(example)
    assert not slapd.serves_network(site)  # ldapi:/// only: nothing to guess
    assert "slapd" not in fail2ban.jail_names(site, "mail")
    site = replace(site, ldap=replace(site.ldap, network=True))
    assert slapd.listen_uris(site) == "ldap:/// ldapi:///"
    assert "slapd" in fail2ban.jail_names(site, "mail")
    ini = {j.name: dict(j.settings()) for j in fail2ban.jails(site, "mail")}
    assert ini["slapd"] == {"enabled": "true", "port": "389,636",
                            "journalmatch": "_SYSTEMD_UNIT=slapd.service"}


def test_the_sites_own_never_ban_list_is_added_as_networks(write_site) -> None:
    site = load_site(write_site(GOOD + "bans:\n  never: [198.51.100.7, 2001:db8::/32]\n"
                                       "  max_failures: 6\n  window: 1h\n  ban_time: 1d\n"))
    d = dict(fail2ban.defaults(site))
    assert d["ignoreip"] == "127.0.0.0/8 ::1/128 192.0.2.1/32 198.51.100.7/32 2001:db8::/32"
    assert (d["maxretry"], d["findtime"], d["bantime"]) == ("6", "1h", "1d")


def test_a_relay_named_by_host_name_is_not_resolved_into_the_list(write_site) -> None:
    site = load_site(write_site(GOOD.replace("host: 192.0.2.1", "host: relay.example.net")))
    assert fail2ban.never_banned(site) == ["127.0.0.0/8", "::1/128"]


@pytest.mark.parametrize(("bans", "expected"), [
    ("never: [10.0.0.1/8]",
     ["site.yml:14: bans.never[0]: '10.0.0.1/8' has host bits set: write the network "
      "10.0.0.0/8"]),
    ("never: [10.0.0.0/8, office-nat]",
     ["site.yml:14: bans.never[1]: 'office-nat' is neither an IP address nor a network in "
      "CIDR notation (203.0.113.7, 198.51.100.0/24)"]),
    ("never: [0.0.0.0/0]",
     ["site.yml:14: bans.never[0]: warning: '0.0.0.0/0' is every address: nothing would "
      "ever be banned"]),
    ("max_failures: 0", ["site.yml:14: bans.max_failures: 0 failures cannot ban anyone: use 1 "
                         "or more"]),
    ("max_failures: 1",
     ["site.yml:14: bans.max_failures: warning: 1 failed login(s) ban an address: one "
      "mistyped password locks out everyone behind it (an office's NAT); 5 or more is usual"]),
    ("ban_time: 5m",
     ["site.yml:14: bans.ban_time: warning: a ban of 5m is shorter than the window 10m the "
      "failures are counted in: a guesser loses less time than it took to be banned"]),
    ("window: 10 min", ["site.yml:14: bans.window: '10 min' does not match "
                        "^[1-9][0-9]*[smhdw]$"]),
])
def test_bad_ban_options_are_refused_with_their_line(write_site, bans, expected) -> None:
    assert errors_of(write_site(GOOD + "bans:\n  " + bans + "\n")) == expected


def test_the_daemons_slow_down_guessing(example) -> None:
    site = load_site(example)
    main = postfix.main_cf(site, "mail")
    assert main["smtpd_client_auth_rate_limit"] == "20"
    assert main["smtpd_client_connection_rate_limit"] == "60"
    assert main["anvil_rate_time_unit"] == "60s"
    # the head office's relay (by IP) hands mail over in bursts: exempt, like loopback
    assert main["smtpd_client_event_limit_exceptions"] == \
        f"$mynetworks, cidr:{postfix.TRUSTED_CLIENTS}, texthash:{postfix.TRUSTED_CLIENT_NAMES}"
    assert ("auth_failure_delay", "2 secs") in dovecot.config(site, "mail")["settings"]


def test_only_the_labs_site_hosts_get_net_admin_and_a_host_without_it_is_restarted() -> None:
    from mailstack.lab import containers
    from mailstack.lab.plan import plan_lab
    from tests.conftest import EXAMPLE

    plan = plan_lab(load_site(EXAMPLE))
    host, client = plan.host("mail"), plan.client
    assert containers.caps(host) == ("NET_ADMIN",) and containers.caps(client) == ()
    info = {"State": {"Running": True}, "Config": {"Hostname": host.hostname, "Labels": {
        containers.START_LABEL: plan.start}}, "HostConfig": {"CapAdd": ["CAP_SYS_PTRACE"]},
        "NetworkSettings": {"Networks": {plan.network: {"IPAddress": host.ip,
                                                        "Aliases": list(host.aliases)}}}}
    assert not containers.matches(info, plan, host)  # a lab up before bans: started again
    info["HostConfig"]["CapAdd"].append("CAP_NET_ADMIN")
    assert containers.matches(info, plan, host)
