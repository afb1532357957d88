"""The CLI: exact texts on stderr, exit codes, no traceback, nothing written on bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from mailstack import certs
from mailstack.cli import main
from tests.conftest import ROOT


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_ok(capsys, example) -> None:
    code, out, err = run(capsys, "check", str(example))
    assert (code, out, err) == (0, f"{example}: ok (3 accounts, 1 hosts)\n", "")


def test_check_typo_exact_text(capsys, example) -> None:
    example.write_text(example.read_text().replace("\nrelay:", "\nrelya:"))
    code, out, err = run(capsys, "check", str(example))
    assert (code, out) == (2, "")
    assert err == f"{example}:22: relya: unknown key; did you mean 'relay'?\n"


def test_check_reports_every_finding_with_exit_1(capsys, example) -> None:
    text = example.read_text().replace("to: [ivan@krasnoyarsk.example.org, olga@",
                                       "to: [ivn@krasnoyarsk.example.org, olga@")
    example.write_text(text.replace("host: 192.0.2.1", "host: mail.krasnoyarsk.example.org"))
    code, _, err = run(capsys, "check", str(example))
    assert code == 1
    assert err.splitlines() == [
        f"{example}:26: relays.head-office.host: 'mail.krasnoyarsk.example.org' is this site "
        "itself: mail sent there would loop",
        f"{example}:61: aliases[0].to[0]: 'ivn@krasnoyarsk.example.org' points nowhere: no "
        "account or alias has that address; did you mean 'ivan@krasnoyarsk.example.org'?",
    ]


def test_render_bad_input_writes_nothing(capsys, example, tmp_path) -> None:
    example.write_text(example.read_text().replace("schema: courier", "schema: courrier"))
    code, out, err = run(capsys, "render", str(example), "-o", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert err == (f"{example}:14: ldap.schema: expected one of 'courier', 'inetorgperson', "
                   "got 'courrier'; did you mean 'courier'?\n")
    assert not (tmp_path / "out").exists()


def test_render_and_secrets(capsys, tmp_path) -> None:
    site = tmp_path / "site.yml"
    site.write_text((ROOT / "inventories/branch-office/site.yml").read_text())
    code, out, err = run(capsys, "render", str(site), "-o", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert f"{site}:12: ldap: secret 'ldap/dovecot' is missing: expected the file " \
           f"{tmp_path}/secrets/ldap/dovecot; `mailstack secrets SITE` creates it" in err.splitlines()
    code, out, err = run(capsys, "secrets", str(site))
    assert code == 1 and f"created {tmp_path}/secrets/tls/mail.key\n" in out
    # the outside world's secrets cannot be generated (in the lab, `lab up` stands in for them)
    assert err.splitlines() == [
        f"{tmp_path}/secrets/{name}: missing; put it there yourself (it cannot be generated)"
        for name in ("lab/head-office-ca", "provider/shop", "lab/provider-ca", "provider/olga")]
    for name in ("provider/shop", "lab/head-office-ca", "lab/provider-ca", "provider/olga"):
        (tmp_path / "secrets" / name).parent.mkdir(exist_ok=True, mode=0o700)
        shutil.copy(ROOT / "tests/fixtures/secrets" / name, tmp_path / "secrets" / name)
        (tmp_path / "secrets" / name).chmod(0o600)
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "secrets").rglob("*") if p.is_file()}
    assert modes == {0o600}
    before = (tmp_path / "secrets/ldap/dovecot").read_bytes()
    code, out, _ = run(capsys, "secrets", str(site))
    assert (code, out) == (0, f"{tmp_path}/secrets: nothing to create\n")
    assert (tmp_path / "secrets/ldap/dovecot").read_bytes() == before
    code, out, err = run(capsys, "render", str(site), "-o", str(tmp_path / "out"))
    assert (code, out, err) == (0, f"rendered {tmp_path}/out/krasnoyarsk\n", "")


def test_missing_file_and_yaml_error_no_traceback(tmp_path) -> None:
    bad = tmp_path / "site.yml"
    bad.write_text("site: x\n  oops: [\n")
    for target, expected in ((tmp_path / "nope.yml",
                              f"{tmp_path}/nope.yml: cannot read the site file: No such file or "
                              "directory\n"),
                             (bad, f"{bad}:2: (top): YAML syntax error: mapping values are not "
                                   "allowed in this context\n")):
        proc = subprocess.run([sys.executable, "-m", "mailstack.cli", "check", str(target)],
                              capture_output=True, text=True, cwd=ROOT, check=False)
        assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", expected)


def test_verify_parts_are_the_ones_verify_knows(capsys, example) -> None:
    from mailstack import cli
    from mailstack.verify import CERT_PART, PROBE_PARTS, hops

    assert (*PROBE_PARTS, *hops.PARTS, CERT_PART) == cli.VERIFY_PARTS
    with pytest.raises(SystemExit) as exit_:
        main(["verify", str(example), "--lab", "--only", "bogus"])
    assert exit_.value.code == 2
    _, err = capsys.readouterr()
    assert "argument --only: invalid choice: 'bogus'" in err


def _walk_cases(tmp_path, example):
    """(label, argv, what the one line starts with) for every entry point's typical failure."""
    from mailstack import render

    broken_yaml = tmp_path / "broken.yml"
    broken_yaml.write_text("site: x\nhosts: [\n")
    bad_inventory = tmp_path / "inventory.yml"
    bad_inventory.write_text("all: {hosts: [\n")
    templates = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, templates)
    (templates / "etc" / "postfix" / "main.cf.j2").write_text("{{ no_such_value }}\n")
    return [
        ("missing site", ["check", str(tmp_path / "none.yml")], str(tmp_path / "none.yml")),
        ("yaml syntax", ["render", str(broken_yaml), "-o", str(tmp_path / "b")],
         f"{broken_yaml}:"),
        ("jinja undefined", ["render", str(example), "-o", str(tmp_path / "b")],
         "etc/postfix/main.cf.j2"),
        ("missing inventory", ["apply", str(example), "-i", str(tmp_path / "no.yml"),
                               "-b", str(tmp_path / "b")], f"{tmp_path / 'no.yml'}: no such"),
        ("bad inventory", ["verify", str(example), "-i", str(bad_inventory), "-b",
                           str(tmp_path / "b"), "--no-host-checks"], f"{bad_inventory}:2: "),
        ("no lab", ["apply", str(example), "--lab", "-b", str(tmp_path / "nolab")],
         "no lab is up"),
        ("lab without a site", ["lab", "up"], "mailstack lab up: SITE is required"),
    ], templates


def test_every_entry_point_fails_with_one_line_and_no_traceback(capsys, tmp_path, example,
                                                               monkeypatch) -> None:
    from mailstack import render

    cases, templates = _walk_cases(tmp_path, example)
    for label, argv, start in cases:
        if label == "jinja undefined":
            monkeypatch.setattr(render, "TEMPLATES", templates)
        code, _out, err = run(capsys, *argv)
        monkeypatch.setattr(render, "TEMPLATES", render.resources.TEMPLATES)
        assert code != 0, label
        assert "Traceback" not in err, (label, err)
        assert len(err.strip().splitlines()) == 1, (label, err)
        assert start in err, (label, err)


def test_a_bug_is_one_line_unless_the_traceback_is_asked_for(capsys, example,
                                                            monkeypatch) -> None:
    from mailstack import core

    def boom(*_a, **_k):
        raise KeyError("surprise")

    monkeypatch.setattr(core, "check", boom)
    code, _, err = run(capsys, "check", str(example))
    assert (code, err) == (70, "mailstack: internal error: KeyError: 'surprise' (a bug; set "
                               "MAILSTACK_TRACEBACK=1 to see where)\n")
    monkeypatch.setenv("MAILSTACK_TRACEBACK", "1")
    with pytest.raises(KeyError):
        main(["check", str(example)])


def test_a_certificate_near_its_end_warns_and_secrets_renew_renews_it(capsys, example) -> None:
    from tests.unit.test_certs import reissue

    sec = example.parent / "secrets"
    code, out, err = run(capsys, "secrets", str(example), "--renew")
    fixture_end = "2029-03-06 04:32 UTC"
    assert (code, out, err) == (0, f"{sec}/tls/mail.crt: valid until {fixture_end}, not due: "
                                   "not renewed\n", "")
    old = reissue(sec, days=12, back=1)
    end = certs.inspect(old).not_after.strftime("%Y-%m-%d %H:%M UTC")
    code, out, err = run(capsys, "check", str(example))
    assert (code, out) == (0, f"{example}: ok (3 accounts, 1 hosts)\n")
    assert err == (f"{example}:8: hosts.mail: warning: {sec}/tls/mail.crt: the certificate "
                   f"expires on {end}, in 10 days; `mailstack secrets SITE --renew` renews it\n")
    code, out, err = run(capsys, "secrets", str(example), "--renew")
    new_end = certs.inspect((sec / "tls/mail.crt").read_text()).not_after
    assert (code, err) == (0, "")
    assert out == (
        f"renewed {sec}/tls/mail.crt: it expires on {end}, in 10 days; the new one is valid "
        f"until {new_end:%Y-%m-%d %H:%M UTC} (same key)\n"
        f"`mailstack apply {example}` puts the renewed certificates on the hosts (Postfix and "
        "Dovecot reload, slapd restarts)\n")
    assert run(capsys, "check", str(example)) == (0, f"{example}: ok (3 accounts, 1 hosts)\n", "")
    reissue(sec, days=2, back=3)
    code, out, err = run(capsys, "render", str(example), "-o", str(example.parent / "out"))
    assert (code, out) == (2, "")
    assert err.startswith(f"{example}:8: hosts.mail: {sec}/tls/mail.crt: the certificate "
                          "expired on ")


def test_status_texts_without_a_network(capsys, example, tmp_path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    other: {ansible_host: 192.0.2.9}\n")
    code, out, err = run(capsys, "status", str(example), "-i", str(inventory))
    assert (code, out) == (2, "")
    assert err == (f"{inventory}: no host 'mail' (or mail.krasnoyarsk.example.org) in the "
                   "inventory\n")
    inventory.write_text("all:\n  hosts:\n    mail: {ansible_host: 192.0.2.9}\n")
    text = example.read_text()
    example.write_text(text[:text.index("# Remote mailboxes")])
    assert run(capsys, "status", str(example), "-i", str(inventory)) == (
        0, "the site collects no remote mailboxes\n", "")


def test_audit_texts_without_a_network(capsys, example, tmp_path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    other: {ansible_host: 192.0.2.9}\n")
    code, out, err = run(capsys, "audit", str(example), "-i", str(inventory), "--user",
                         "ivan@krasnoyarsk.example.org")
    assert (code, out) == (2, "")
    assert err == (f"{inventory}: no host 'mail' (or mail.krasnoyarsk.example.org) in the "
                   "inventory\n")
    code, out, err = run(capsys, "audit", str(example), "-i", str(inventory), "--user",
                         "ivan(x)")
    assert (code, out, err) == (2, "", "--user: not an account's address: 'ivan(x)'\n")
