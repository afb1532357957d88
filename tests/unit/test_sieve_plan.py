"""Sieve as planned: the site's scripts, vacation replies, the shared folders' filing accounts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mailstack.plan import dit, dovecot, hosts, sieve
from mailstack.site.load import load_site
from mailstack.site.model import Folder, Sieve, Vacation

INVOICES = "invoices@krasnoyarsk.example.org"


def _paths(site) -> dict[str, str]:
    return {f.path: f.data["text"] for f in sieve.files(site)}


def test_the_example_gets_the_spam_rule_and_the_filing_script_and_no_vacation(
        example: Path) -> None:
    site = load_site(example)
    files = _paths(site)
    assert set(files) == {sieve.SPAM_SCRIPT, sieve.account_script(INVOICES)}
    assert 'if header :is "X-Spam-Flag" "YES" {\n  fileinto :create "Junk";\n  stop;' \
        in files[sieve.SPAM_SCRIPT]
    assert files[sieve.account_script(INVOICES)].endswith(
        'require ["fileinto"];\nfileinto "Public/Invoices";\nstop;\n')
    # every Sieve file lives below the Dovecot directory: staged, compiled and swapped with it
    assert all(f.path.startswith("/etc/dovecot/sieve/") for f in sieve.files(site))
    assert all(f in dovecot.files(site, "mail", "ldapi:///", {"ldap/dovecot": "pw"})
               for f in sieve.files(site))


def test_the_junk_folder_is_the_one_whose_special_use_is_junk(example: Path) -> None:
    site = load_site(example)
    renamed = dataclasses.replace(site, folders=(Folder("Спам", "junk", "14d"),))
    assert 'fileinto :create "Спам";' in _paths(renamed)[sieve.SPAM_SCRIPT]
    assert sieve.SPAM_SCRIPT not in _paths(dataclasses.replace(site, folders=()))
    off = dataclasses.replace(site, sieve=Sieve(spam_header=None))
    assert sieve.SPAM_SCRIPT not in _paths(off)


def test_the_site_s_own_script_and_a_vacation_are_rendered_as_given(example: Path) -> None:
    site = load_site(example)
    ivan = dataclasses.replace(site.accounts[0], vacation=Vacation(
        subject='Away "till" Monday', text="Back on Monday.\nUrgent: olga@", days=3))
    site = dataclasses.replace(
        site, accounts=(ivan, *site.accounts[1:]),
        sieve=Sieve(before='require "fileinto";\nif size :over 20M { discard; stop; }'))
    files = _paths(site)
    assert files[sieve.SITE_SCRIPT].endswith("discard; stop; }\n")
    assert files[sieve.account_script(ivan.mail)].endswith(
        'require ["vacation"];\nvacation :days 3 :subject "Away \\"till\\" Monday"\n'
        '  "Back on Monday.\nUrgent: olga@";\n')


def test_a_shared_folder_address_is_a_delivery_only_account(example: Path) -> None:
    site = load_site(example)
    entry = next(e for e in dit.entries(site) if e.dn == dit.account_dn(site, INVOICES))
    assert sorted(entry.values(dit.DISABLED_SERVICE)) == sorted(dit.DOVECOT_SERVICE.values())
    assert entry.values("userPassword") == [dit.PLACEHOLDER_PASSWORD]
    assert INVOICES not in {a.mail for a in site.accounts}


def test_sieve_is_a_service_of_its_own_and_managesieve_can_be_off(example: Path) -> None:
    site = load_site(example)
    assert dit.DOVECOT_SERVICE["sieve"] == "sieve"  # Dovecot's %s for ManageSieve (tried)
    olga = next(a for a in site.accounts if a.mail.startswith("olga@"))
    assert "sieve" in dit.disabled_services(olga)
    conf = dovecot.config(site, "mail")
    settings = dict(conf["settings"])  # type: ignore[arg-type]
    assert settings["protocols"] == "imap pop3 lmtp sieve"
    assert settings["lmtp_save_to_detail_mailbox"] == "no"
    assert settings["submission_host"] == "127.0.0.1:25"
    assert conf["sieve"]["managesieve_port"] == 4190  # type: ignore[index]
    off = dovecot.config(dataclasses.replace(site, sieve=Sieve(managesieve=False)), "mail")
    assert dict(off["settings"])["protocols"] == "imap pop3 lmtp"  # type: ignore[arg-type]
    assert off["sieve"]["managesieve_port"] is None  # type: ignore[index]
    assert {"dovecot-sieve", "dovecot-managesieved"} <= set(hosts.packages(site, "mail"))


def test_the_plugin_finds_each_account_s_script_by_its_lower_case_address() -> None:
    settings = dict(sieve.plugin_settings(None))  # type: ignore[arg-type]
    assert settings["sieve_before2"] == f"{sieve.ACCOUNTS_DIR}/%Lu.sieve"
    assert sieve.account_script("Ivan@X.org") == f"{sieve.ACCOUNTS_DIR}/ivan@x.org.sieve"


def _findings(write_site, extra: str) -> list[str]:
    from tests.unit.test_site_checks import GOOD, errors_of

    return [f for f in errors_of(write_site(GOOD + extra)) if "sieve" in f or "vacation" in f
            or "shared_folders" in f]


def test_check_refuses_a_folder_address_that_is_taken_and_warns_of_a_missing_junk(
        write_site) -> None:
    found = _findings(write_site, (
        "shared_folders:\n"
        "  - {name: Invoices, address: Postmaster@krasnoyarsk.example.org, "
        "rights: {olga@krasnoyarsk.example.org: [read]}}\n"
        "folders: [{name: Drafts, special_use: drafts}]\n"))
    assert found == [
        "site.yml:1: sieve.spam_header: warning: no folder has special_use: junk, so spam is not "
        "filed anywhere: add one to folders or set null",
        "site.yml:14: shared_folders[0].address: Postmaster@krasnoyarsk.example.org is already "
        "an alias"]   # (checks/folders.py; once)


def test_scripts_may_span_lines_other_texts_may_not(write_site) -> None:
    from tests.unit.test_site_checks import GOOD, errors_of

    olga = "  - {mail: olga@krasnoyarsk.example.org, name: Olga Sidorova}\n"
    assert olga in GOOD
    text = GOOD.replace(olga, (
        "  - {mail: olga@krasnoyarsk.example.org, name: Olga Sidorova,\n"
        "     vacation: {subject: \"Away\\nBcc: x@y\", text: \"Back\\non Monday.\"}}\n"
        "sieve: {before: \"require \\\"fileinto\\\";\\nkeep;\\n\"}\n"))
    assert [f.split(": ", 2)[1] for f in errors_of(write_site(text))] == [
        "accounts[1].vacation.subject"]
