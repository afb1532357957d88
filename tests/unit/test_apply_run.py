"""mailstack.apply without hosts: events to progress and report, the vars file, failures.

A stand-in ``ansible-playbook`` (a Python script) replays callback events, so the plumbing is
tested without SSH; one test runs the real ansible-playbook with the real callback on localhost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailstack import apply as applying
from mailstack.errors import InputError, ToolError
from mailstack.site.load import load_site

EVENT = applying.EVENT_PREFIX


def event(kind: str, **data: object) -> str:
    return EVENT + json.dumps({"event": kind, **data})


def fake_playbook(tmp_path: Path, lines: list[str], rc: int = 0, stderr: str = "") -> Path:
    """An ansible-playbook stand-in: records its argv and vars file, prints ``lines``."""
    script = tmp_path / "fake-ansible-playbook"
    record = tmp_path / "record.json"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, stat, sys
        argv = sys.argv[1:]
        vars_file = next(a[1:] for a in argv if a.startswith("@"))
        json.dump({{"argv": argv, "mode": stat.S_IMODE(os.stat(vars_file).st_mode),
                    "vars": json.load(open(vars_file)),
                    "env": {{k: v for k, v in os.environ.items() if k.startswith("ANSIBLE_")}}}},
                  open({str(record)!r}, "w"))
        for line in {lines!r}:
            print(line, flush=True)
        sys.stderr.write({stderr!r})
        sys.exit({rc})
        """))
    script.chmod(0o755)
    return script


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text("all:\n  hosts:\n    mail: {ansible_host: 192.0.2.10}\n")
    return path


def use(monkeypatch: pytest.MonkeyPatch, script: Path) -> None:
    monkeypatch.setattr(applying, "ansible_playbook", lambda: str(script))


GOOD_RUN = [
    event("playbook", file="playbooks/site.yml"),
    event("play", name="Configure Postfix"),
    event("task", task="Place the rendered files", role="mailstack_base", action="copy"),
    event("item_ok", host="mail", task="Place the rendered files", role="mailstack_base",
          changed=True, item="/etc/mailstack/tls/ca.crt"),
    event("item_ok", host="mail", task="Place the rendered files", role="mailstack_base",
          changed=False, item="/etc/mailstack/tls/mail.crt"),
    event("ok", host="mail", task="Place the rendered files", role="mailstack_base",
          changed=True, action="ansible.builtin.copy"),
    event("ok", host="mail", task="Bring the directory tree in line", role="mailstack_slapd",
          changed=True, action="mailstack.mail.ldap_entries", msg="added mail=petr@x"),
    event("skipped", host="mail", task="Build slapd offline", role="mailstack_slapd",
          changed=False),
    event("ok", host="mail", task="Start Postfix", role="mailstack_postfix", changed=False),
    "some stray line",
    event("stats", hosts={"mail": {"ok": 3, "changed": 2, "unreachable": 0, "failures": 0,
                                   "skipped": 1, "rescued": 0, "ignored": 0}}),
]


def test_apply_renders_streams_progress_and_reports(example: Path, inventory: Path,
                                                     tmp_path: Path, monkeypatch) -> None:
    script = fake_playbook(tmp_path, GOOD_RUN)
    use(monkeypatch, script)
    lines: list[str] = []
    report = applying.apply(example, inventory=inventory, build_dir=tmp_path / "build",
                            out=lines.append)
    build = (tmp_path / "build" / "krasnoyarsk").resolve()
    assert (build / "manifest.json").is_file()
    assert report.build == build and report.ok and report.changed == 2
    host = report.hosts["mail"]
    assert host.recap == "ok=3 changed=2 unreachable=0 failed=0 skipped=1 rescued=0 ignored=0"
    assert host.changes == [
        "mailstack_base: Place the rendered files (/etc/mailstack/tls/ca.crt)",
        "mailstack_slapd: Bring the directory tree in line: added mail=petr@x",
    ]
    assert "== Configure Postfix" in lines
    assert "mail: changed  mailstack_base: Place the rendered files (/etc/mailstack/tls/ca.crt)" \
        in lines
    assert "mail: ok       mailstack_postfix: Start Postfix" in lines
    assert not any("Build slapd offline" in line for line in lines)
    assert lines[-1].startswith("krasnoyarsk: 1 hosts, 2 tasks changed, ")

    record = json.loads((tmp_path / "record.json").read_text())
    argv = record["argv"]
    assert argv[0] == str(applying.PLAYBOOK)
    assert argv[argv.index("-i") + 1] == str(inventory.resolve())
    assert f"mailstack__build={build}" in argv
    assert "--check" not in argv and "--limit" not in argv
    assert record["mode"] == 0o600
    site = load_site(example)
    ivan = "mail=ivan@krasnoyarsk.example.org,ou=people,dc=krasnoyarsk,dc=example,dc=org"
    secrets_dir = example.parent / "secrets"
    assert record["vars"]["mailstack__ldap_passwords"][ivan] == \
        (secrets_dir / "accounts" / "ivan@krasnoyarsk.example.org").read_text().strip()
    assert len(record["vars"]["mailstack__ldap_passwords"]) == 2 + len(site.accounts)
    assert record["env"]["ANSIBLE_CONFIG"] == str(applying.ANSIBLE_CFG)
    assert record["env"]["ANSIBLE_STDOUT_CALLBACK"] == "mailstack.mail.events"
    vars_file = next(a[1:] for a in argv if a.startswith("@"))
    assert not Path(vars_file).exists(), "the secrets file must be deleted"


def test_check_only_and_limit_reach_ansible(example: Path, inventory: Path, tmp_path: Path,
                                            monkeypatch) -> None:
    use(monkeypatch, fake_playbook(tmp_path, GOOD_RUN))
    report = applying.apply(example, inventory=inventory, build_dir=tmp_path / "build",
                            limit="mail", check_only=True, out=lambda _: None)
    argv = json.loads((tmp_path / "record.json").read_text())["argv"]
    assert "--check" in argv and argv[argv.index("--limit") + 1] == "mail"
    assert report.check_only and "would change" in report.lines()[-1]


def test_a_failed_host_raises_with_host_task_and_reason(example: Path, inventory: Path,
                                                       tmp_path: Path, monkeypatch) -> None:
    failing = [
        event("play", name="Configure Postfix"),
        event("failed", host="mail", task="Check the staged Postfix configuration as a whole",
              role="mailstack_postfix", changed=False, ignored=False, rescued=True, rc=1,
              msg="non-zero return code",
              stdout="smtpd (service smtp/inet, main.cf and master.cf): fatal: Invalid TLS level "
                     "\"bogus\"\r\nShared connection to 10.89.1.10 closed.\r\n"),
        event("failed", host="mail", task="Report why the rendered Postfix configuration was "
              "refused", role="mailstack_postfix", changed=False, ignored=False,
              msg="mail: Postfix refused the rendered configuration (/etc/postfix/main.cf "
                  "changed): fatal: Invalid TLS level \"bogus\"; warning: later line"),
        # force_handlers: a handler runs after the real failure and fails too
        event("failed", host="mail", task="Check the live Postfix configuration before "
              "reloading", role="mailstack_postfix", changed=False, ignored=False, rc=1,
              msg="non-zero return code", stderr="postfix: fatal: open /etc/postfix/main.cf"),
        event("stats", hosts={"mail": {"ok": 20, "changed": 1, "unreachable": 0, "failures": 1,
                                       "skipped": 3, "rescued": 1, "ignored": 0}}),
    ]
    use(monkeypatch, fake_playbook(tmp_path, failing, rc=2))
    lines: list[str] = []
    with pytest.raises(applying.ApplyFailed) as caught:
        applying.apply(example, inventory=inventory, build_dir=tmp_path / "build",
                       out=lines.append)
    message = str(caught.value)
    assert message.startswith("apply of krasnoyarsk failed on mail:\n")
    # the last line names the task that really failed and its first meaningful line, not the
    # handler that ran after it, and no SSH noise
    assert message.splitlines()[-1] == (
        "mail: mailstack_postfix: Report why the rendered Postfix configuration was refused: "
        "mail: Postfix refused the rendered configuration (/etc/postfix/main.cf changed): "
        "fatal: Invalid TLS level \"bogus\"; warning: later line")
    assert not any("Shared connection" in line for line in lines)
    assert any(line.startswith("mail: rescued  mailstack_postfix: Check the staged")
               for line in lines)
    assert caught.value.exit_code == 3
    assert caught.value.report.hosts["mail"].failed == 1
    assert any(line.startswith("mail: rescued  mailstack_postfix: Check the staged Postfix "
                               "configuration as a whole: smtpd (service smtp/inet") and
               line.endswith("\"bogus\" (exit 1)") for line in lines)
    vars_file = next(a[1:] for a in json.loads((tmp_path / "record.json").read_text())["argv"]
                     if a.startswith("@"))
    assert not Path(vars_file).exists()


def test_unreachable_host_is_named(example: Path, inventory: Path, tmp_path: Path,
                                   monkeypatch) -> None:
    lines = [
        event("unreachable", host="mail", task="Find which of the host's packages are missing",
              role="mailstack_base", changed=False,
              msg="Failed to connect to the host via ssh: Connection refused"),
        event("stats", hosts={"mail": {"ok": 4, "changed": 0, "unreachable": 1, "failures": 0,
                                       "skipped": 0, "rescued": 0, "ignored": 0}}),
    ]
    use(monkeypatch, fake_playbook(tmp_path, lines, rc=4))
    with pytest.raises(applying.ApplyFailed, match="mail: mailstack_base: Find which of the "
                       "host's packages are missing: Failed to connect to the host via ssh") \
            as caught:
        applying.apply(example, inventory=inventory, build_dir=tmp_path / "build",
                       out=lambda _: None)
    assert str(caught.value).endswith(applying.UNREACHABLE_HINT)


def test_an_unreachable_loop_is_named_by_its_items_message() -> None:
    """SSH dropped during a loop: Ansible's own message is "All items completed"; the item's
    says what happened."""
    events = applying._Events(lambda _: None)
    events.feed({"event": "unreachable", "host": "mail", "role": "mailstack.mail.base",
                 "task": "Place the rendered files in the staging directory", "changed": False,
                 "msg": "All items completed", "failed_items": [
                     {"item": "/etc/postfix/main.cf",
                      "msg": "Failed to connect to the host via ssh: Connection refused"}]})
    failure = events.hosts["mail"].failure
    assert failure == ("mailstack.mail.base: Place the rendered files in the staging directory: "
                       "[/etc/postfix/main.cf] Failed to connect to the host via ssh: Connection "
                       f"refused -- {applying.UNREACHABLE_HINT}")


def test_ansible_errors_without_a_recap_are_tool_errors(example: Path, inventory: Path,
                                                        tmp_path: Path, monkeypatch) -> None:
    use(monkeypatch, fake_playbook(tmp_path, [], rc=1,
                                   stderr="ERROR! the role 'x' was not found\n"))
    with pytest.raises(ToolError, match=r"^ansible-playbook exited with 1: ERROR! the role 'x' "
                       r"was not found$"):
        applying.apply(example, inventory=inventory, build_dir=tmp_path / "build",
                       out=lambda _: None)


def test_missing_inventory_is_an_input_error(example: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no-such\.yml: no such inventory"):
        applying.apply(example, inventory=tmp_path / "no-such.yml", build_dir=tmp_path / "b")


def test_render_keeps_the_labs_folder(example: Path, inventory: Path, tmp_path: Path,
                                      monkeypatch) -> None:
    lab = tmp_path / "build" / "krasnoyarsk" / "lab"
    lab.mkdir(parents=True)
    (lab / "inventory.yml").write_text("all: {}\n")
    use(monkeypatch, fake_playbook(tmp_path, GOOD_RUN))
    applying.apply(example, inventory=lab / "inventory.yml", build_dir=tmp_path / "build",
                   out=lambda _: None)
    assert (lab / "inventory.yml").read_text() == "all: {}\n"


def test_the_callback_streams_json_lines_from_a_real_playbook(tmp_path: Path) -> None:
    """The real ansible-playbook with the real callback, against localhost."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: A small play
          hosts: localhost
          gather_facts: false
          tasks:
            - name: Say something
              ansible.builtin.command: "echo {{ item }}"
              loop: [one, two]
              changed_when: item == 'two'
            - name: A block whose rescue handles the failure
              block:
                - name: Fail inside the block
                  ansible.builtin.command: "false"
              rescue:
                - name: Fail on purpose
                  ansible.builtin.command: sh -c 'echo broken >&2; exit 3'
        """))
    env = dict(os.environ, ANSIBLE_CONFIG=str(applying.ANSIBLE_CFG),
               ANSIBLE_STDOUT_CALLBACK=applying.CALLBACK,
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    try:
        executable = applying.ansible_playbook()
    except ToolError:
        pytest.skip("ansible-playbook is not installed")
    proc = subprocess.run([executable, str(playbook), "-c", "local"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    events = [json.loads(line[len(EVENT):]) for line in proc.stdout.splitlines()
              if line.startswith(EVENT)]
    assert proc.returncode == 2, proc.stderr
    assert [e["event"] for e in events][:2] == ["playbook", "play"]
    items = [e for e in events if e["event"] == "item_ok"]
    assert [(e["item"], e["changed"]) for e in items] == [("one", False), ("two", True)]
    first, failed = (e for e in events if e["event"] == "failed")
    assert first["task"] == "Fail inside the block" and first["rescued"] is True
    assert failed["task"] == "Fail on purpose" and failed["stderr"] == "broken"
    assert failed["rc"] == 3 and failed["rescued"] is False
    stats = next(e for e in events if e["event"] == "stats")
    assert stats["hosts"]["localhost"]["failures"] == 1
    assert stats["hosts"]["localhost"]["rescued"] == 1
    assert stats["hosts"]["localhost"]["changed"] == 1


def test_the_headline_is_the_tasks_message_or_the_commands_first_line() -> None:
    assert applying._headline({"msg": "non-zero return code", "rc": 1,
                               "stdout": "Shared connection to 10.0.0.1 closed.\r\n",
                               "stderr": "\nE: Unable to locate package postfix-ldap\nE: more"}) \
        == "E: Unable to locate package postfix-ldap"
    assert applying._headline({"msg": "mail: this host already runs mail; Found: x"}) == \
        "mail: this host already runs mail; Found: x"


def test_failure_text_prefers_what_the_command_said() -> None:
    text = applying._failure_text({"msg": "non-zero return code", "stderr": "bad\nworse",
                                   "stdout": "", "rc": 2})
    assert text == "bad; worse (exit 2)"
    assert applying._failure_text({"msg": "One or more items failed", "failed_items": [
        {"item": "/etc/x", "msg": "Destination directory /etc does not exist"}]}) == \
        "One or more items failed | [/etc/x] Destination directory /etc does not exist"


def test_vars_file_is_private_and_gone_even_when_ansible_is_missing(tmp_path: Path,
                                                                    monkeypatch) -> None:
    made: list[str] = []
    real_mkstemp = applying.tempfile.mkstemp

    def mkstemp(**kwargs):
        fd, path = real_mkstemp(dir=tmp_path, **kwargs)
        made.append(path)
        return fd, path

    monkeypatch.setattr(applying.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(applying, "ansible_playbook",
                        lambda: (_ for _ in ()).throw(ToolError("no ansible")))
    with pytest.raises(ToolError, match="no ansible"):
        applying.run_playbook(tmp_path, tmp_path, {"mailstack__ldap_passwords": {"a": "b"}})
    assert made and not Path(made[0]).exists()


def test_diffs_of_changed_files_are_shown_and_secret_ones_hidden(tmp_path: Path) -> None:
    """The real ansible-playbook and callback, --check --diff on localhost."""
    shown, secret = tmp_path / "main.cf", tmp_path / "mail.key"
    shown.write_text("myhostname = old\n")
    secret.write_text("OLD KEY\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - name: Place two files
          hosts: localhost
          gather_facts: false
          tasks:
            - name: Place the rendered files
              ansible.builtin.copy:
                content: "{{{{ item.text }}}}"
                dest: "{{{{ item.path }}}}"
                mode: "0600"
              loop:
                - {{path: "{shown}", text: "myhostname = new\\n"}}
                - {{path: "{secret}", text: "NEW KEY\\n"}}
              loop_control:
                label: "{{{{ item.path }}}}"
        """))
    env = dict(os.environ, ANSIBLE_CONFIG=str(applying.ANSIBLE_CFG),
               ANSIBLE_STDOUT_CALLBACK=applying.CALLBACK,
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               MAILSTACK_HIDE_DIFFS=json.dumps([str(secret)]))
    try:
        executable = applying.ansible_playbook()
    except ToolError:
        pytest.skip("ansible-playbook is not installed")
    proc = subprocess.run([executable, str(playbook), "-c", "local", "--check", "--diff"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NEW KEY" not in proc.stdout and "OLD KEY" not in proc.stdout
    events = applying._Events(lambda _: None)
    for line in proc.stdout.splitlines():
        if line.startswith(EVENT):
            events.feed(json.loads(line[len(EVENT):]))
    diffs = dict(events.hosts["localhost"].diffs)
    assert diffs[str(secret)] == "(secret: diff hidden)"
    assert "-myhostname = old\n+myhostname = new" in diffs[str(shown)]
    assert shown.read_text() == "myhostname = old\n"  # check mode changed nothing


def test_secret_paths_come_from_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"hosts": {"mail": {"files": {
        "/etc/a": {"secret": False}, "/etc/b.key": {"secret": True}}}}}))
    assert applying.secret_paths(tmp_path) == ["/etc/b.key"]
    assert applying.secret_paths(tmp_path / "missing") == []
