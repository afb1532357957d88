"""The whole head-office example (a head office, two branches) and its faults: `make
test-multisite` (marked slow: not in `make test`, whose compact version is
tests/live/test_multisite.py).

One lab for the module: inventories/head-office/site.yml under its own site name, five
containers on its --internal network (hq, tomsk, omsk, the outside smarthost's stand-in, the
client). The cases run in order; each leaves the fleet as the site says (a fault is undone, a
broken variant is mended by `apply --limit`). Mail is counted by Message-ID in the Maildirs;
the path a message took is read from its Received headers. Figures are printed (pytest -s).

Each check is also run against a deliberately broken variant, where it must fail: a transport
that delivers locally (tests/live/test_multisite.py), a lookup order with the provider first,
a provider without the replication identity's size limit.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import live
from tests.live.test_multisite import BASE, DOMAIN, Fleet, fleet_text, hops, lab_fleet, wait_for

pytestmark = [*live(ssh=True, ansible=True), pytest.mark.slow]

HQ_NAME, TOMSK_NAME, OMSK_NAME = (f"mail.{h}.taiga.example.org" for h in ("hq", "tomsk", "omsk"))
DIRECTOR, IVAN, MARIA, OLGA = (f"{u}@{DOMAIN}" for u in ("director", "ivan", "maria", "olga"))
OUTSIDE = "partner@outside.example"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    with lab_fleet(tmp_path_factory.mktemp("fleet3"), fleet_text("fleet", compact=False)) \
            as world:
        second = world.apply()
        assert second.changed == 0, second.lines()
        print(f"\n[a second apply of {len(second.hosts)} hosts: {second.seconds:.1f} s, "
              "nothing changed]")
        yield world


def signal_slapd(fleet: Fleet, host: str, signal: str) -> None:
    fleet.sh(host, f"pkill -{signal} -x slapd")


def podman(*args: str) -> None:
    subprocess.run(["podman", *args], check=True, capture_output=True, timeout=60)


def test_a_message_from_one_branch_to_the_other_travels_through_the_head_office(
        fleet: Fleet) -> None:
    mid = fleet.send(TOMSK_NAME, OLGA, IVAN, port=587, login=IVAN)
    got = wait_for(lambda: fleet.copies("omsk", OLGA, mid), 30)
    assert len(got) == 1 and hops(got[0]) == [TOMSK_NAME, HQ_NAME, OMSK_NAME], got
    for host in ("tomsk", "hq"):
        assert fleet.copies(host, OLGA, mid) == [], f"a copy at {host}"
    # and the way back, from the outside at one branch to the other's account
    mid = fleet.send(OMSK_NAME, MARIA, OUTSIDE)
    got = wait_for(lambda: fleet.copies("tomsk", MARIA, mid), 30)
    assert len(got) == 1 and hops(got[0]) == [OMSK_NAME, HQ_NAME, TOMSK_NAME], got


def test_with_the_head_office_paused_a_branch_works_and_its_mail_waits(fleet: Fleet) -> None:
    hq = fleet.state.host("hq").name
    podman("pause", hq)
    try:
        assert fleet.imap_login("tomsk", IVAN) == "ok"
        local = fleet.send(TOMSK_NAME, MARIA, IVAN, port=587, login=IVAN)
        assert len(wait_for(lambda: fleet.copies("tomsk", MARIA, local), 30)) == 1
        other = fleet.send(TOMSK_NAME, OLGA, IVAN, port=587, login=IVAN)
        outside = fleet.send(TOMSK_NAME, "someone@elsewhere.example", IVAN, port=587,
                             login=IVAN)
        time.sleep(3)
        queued = fleet.sh("tomsk", "postqueue -p")
        assert "someone@elsewhere.example" in queued and OLGA in queued, queued
    finally:
        podman("unpause", hq)
    back = time.monotonic()
    fleet.sh("tomsk", "postqueue -f")
    got = wait_for(lambda: fleet.copies("omsk", OLGA, other), 120, 1)
    assert len(got) == 1, got
    print(f"\n[the head office back: the branch's waiting mail reached the other branch "
          f"{time.monotonic() - back:.1f} s later (after a queue flush)]")
    relay = fleet.state.relay("isp").name
    sink = wait_for(lambda: subprocess.run(
        ["podman", "exec", relay, "sh", "-c", f"grep -rlF '<{outside}>' /var/mail /var/spool "
                                              "/var/vmail 2>/dev/null | wc -l"],
        capture_output=True, text=True).stdout.strip() not in ("", "0"), 60, 1)
    assert sink, "the outside message never reached the smarthost"
    time.sleep(2)
    assert len(fleet.copies("omsk", OLGA, other)) == 1


def test_a_hung_provider_costs_a_branch_nothing(fleet: Fleet) -> None:
    fleet.sh("tomsk", "doveadm auth cache flush")  # the login must ask the directory
    signal_slapd(fleet, "hq", "STOP")
    try:
        started = time.monotonic()
        assert fleet.imap_login("tomsk", IVAN) == "ok"
        login = time.monotonic() - started
        mid = fleet.send(TOMSK_NAME, MARIA, IVAN, port=587, login=IVAN)
        assert len(wait_for(lambda: fleet.copies("tomsk", MARIA, mid), 30)) == 1
        delivered = time.monotonic() - started
    finally:
        signal_slapd(fleet, "hq", "CONT")
    print(f"\n[provider hung: an IMAP login at the branch {login:.1f} s, a local message "
          f"sent and delivered {delivered:.1f} s]")
    assert login < 5


def test_a_branch_asking_the_provider_first_fails_the_hung_provider_check(fleet: Fleet) -> None:
    """The broken variant: the branch's lookups ask the provider first."""
    swap = (f"sed -i 's#ldap://{OMSK_NAME} ldap://{HQ_NAME}#ldap://{HQ_NAME} "
            f"ldap://{OMSK_NAME}#' /etc/postfix/ldap/*.cf /etc/dovecot/dovecot-ldap-*.conf.ext"
            " && postfix reload && doveadm reload")
    fleet.sh("omsk", swap)
    try:
        fleet.sh("omsk", "doveadm auth cache flush")
        signal_slapd(fleet, "hq", "STOP")
        try:
            started = time.monotonic()
            answer = fleet.imap_login("omsk", OLGA)
            seconds = time.monotonic() - started
        finally:
            signal_slapd(fleet, "hq", "CONT")
        print(f"\n[provider first, provider hung: the branch's login answered after "
              f"{seconds:.1f} s: {answer}]")
        assert answer != "ok" or seconds >= 5, "the check did not see the wrong order"
    finally:
        report = fleet.apply(limit="omsk")
    assert set(report.hosts) == {"omsk"} and report.hosts["omsk"].changed > 0
    assert fleet.imap_login("omsk", OLGA) == "ok"


def test_a_hung_replica_ends_in_temporary_errors_and_the_watchdog_restarts_it(
        fleet: Fleet) -> None:
    before = fleet.sh("tomsk", "pidof slapd").strip()
    signal_slapd(fleet, "tomsk", "STOP")
    hung = time.monotonic()
    # mail for the branch from the head office waits there; at the branch's own port 25 the
    # sender is told to try later (4xx), never refused
    waiting = fleet.send(HQ_NAME, IVAN, OUTSIDE)
    direct = fleet.client.exec(["swaks", "--server", TOMSK_NAME, "--to", IVAN, "--from", OUTSIDE,
                                "--timeout", "60"], timeout=120)
    answers = [line for line in direct.stdout.splitlines() if line.startswith("<** ")]
    assert direct.returncode != 0 and answers and all(a[4] == "4" for a in answers), \
        direct.stdout[-800:]
    restarted = wait_for(lambda: fleet.sh("tomsk", "pidof slapd || true").strip()
                         not in (before, ""), 90, 1)
    assert restarted, "the watchdog did not restart the hung replica"
    recovered = time.monotonic() - hung
    journal = fleet.sh("tomsk", "journalctl -u mailstack-ldap-watchdog --no-pager -o cat")
    assert "restarting it" in journal
    assert wait_for(lambda: fleet.imap_login("tomsk", IVAN) == "ok", 30, 1)
    fleet.sh("hq", "postqueue -f")
    got = wait_for(lambda: fleet.copies("tomsk", IVAN, waiting), 90, 1)
    assert len(got) == 1, got
    bounced = fleet.sh("hq", "journalctl -u postfix@- --no-pager -o cat | grep -c "
                             "'status=bounced' || true").strip()
    print(f"\n[replica hung: the watchdog restarted it {recovered:.0f} s later; the waiting "
          f"message arrived once; {direct.stdout.count('<** 4')} temporary answers at the "
          f"branch, bounces at the head office: {bounced}]")
    assert bounced == "0"


def test_a_provider_without_the_size_limit_leaves_a_replica_incomplete(fleet: Fleet) -> None:
    """The broken variant: without olcLimits for the replication identity the default size
    limit (500) stops a replica's first refresh; the replica check (same entries as the
    provider) then fails. 600 entries under their own OU, which apply does not own."""
    bulk = f"ou=bulk,{BASE}"
    ldif = [f"dn: {bulk}\nobjectClass: organizationalUnit\nou: bulk\n"]
    ldif += [f"dn: cn=e{i},{bulk}\nobjectClass: device\ncn: e{i}\n" for i in range(600)]
    fleet.box("hq").exec(["ldapadd", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"],
                         input="\n".join(ldif), check=True, timeout=120)

    def count(host: str) -> int:
        out = fleet.sh(host, f"ldapsearch -Q -LLL -Y EXTERNAL -H ldapi:/// -b {BASE} 1.1 "
                             "| grep -c '^dn:' || true")
        return int(out.strip() or 0)

    def fresh_replica() -> None:
        """The replica's database emptied: its next start refreshes it all."""
        fleet.sh("omsk", "systemctl stop slapd && rm -f /var/lib/ldap/*.mdb && "
                         "runuser -u openldap -- slapadd -n1 -F /etc/ldap/slapd.d -l /dev/null "
                         "&& systemctl start slapd")

    try:
        fleet.sh("hq", "printf 'dn: olcDatabase={1}mdb,cn=config\\nchangetype: modify\\n"
                       "delete: olcLimits\\n' | ldapmodify -Q -Y EXTERNAL -H ldapi:///")
        fresh_replica()
        time.sleep(15)
        broken = count("omsk")
        total = count("hq")
        print(f"\n[without the size limit the replica holds {broken} of {total} entries]")
        assert broken < total
    finally:
        fleet.apply(limit="ldap-provider")
        fresh_replica()
    total = count("hq")
    assert wait_for(lambda: count("omsk") == total, 60, 1), (count("omsk"), total)
    fleet.box("hq").exec(["ldapdelete", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///", "-r", bulk],
                         check=True, timeout=120)
    assert wait_for(lambda: count("omsk") == count("hq"), 30, 1)
