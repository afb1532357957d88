"""mailstack.mail.host_state (plugins/modules/host_state.py): one round trip for what the roles
would otherwise ask task by task."""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import subprocess
from pathlib import Path

from mailstack import resources

spec = importlib.util.spec_from_file_location(
    "mailstack_host_state", resources.MODULES / "host_state.py")
assert spec and spec.loader
host_state = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host_state)

ME = pwd.getpwuid(os.getuid())
MY_GROUP = grp.getgrgid(os.getgid())


def answering(stdout: str):
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout, "")
    return run, calls


def test_packages_not_installed_are_missing_in_the_order_given() -> None:
    run, calls = answering("postfix installed;dovecot-core config-files;slapd installed;")
    missing = host_state.missing_packages(["slapd", "nginx-light", "dovecot-core", "postfix"],
                                          run=run)
    assert missing == ["nginx-light", "dovecot-core"]
    assert calls[0][:2] == ["dpkg-query", "--show"]
    assert host_state.missing_packages([], run=run) == [] and len(calls) == 1


def test_each_difference_of_users_and_groups_is_named() -> None:
    me = {"name": ME.pw_name, "uid": ME.pw_uid, "group": MY_GROUP.gr_name, "home": ME.pw_dir,
          "shell": ME.pw_shell}
    assert host_state.account_problems([{"name": MY_GROUP.gr_name, "gid": MY_GROUP.gr_gid}],
                                       [me]) == []
    wrong = dict(me, uid=ME.pw_uid + 1, home="/elsewhere", shell="/bin/false")
    problems = host_state.account_problems(
        [{"name": "no-such-group-here"}, {"name": MY_GROUP.gr_name, "gid": MY_GROUP.gr_gid + 1}],
        [wrong, {"name": "no-such-user-here", "group": "x"}])
    assert problems == [
        "group no-such-group-here: missing",
        f"group {MY_GROUP.gr_name}: gid {MY_GROUP.gr_gid}, not {MY_GROUP.gr_gid + 1}",
        f"user {ME.pw_name}: uid {ME.pw_uid}, not {ME.pw_uid + 1}",
        f"user {ME.pw_name}: home {ME.pw_dir}, not /elsewhere",
        f"user {ME.pw_name}: shell {ME.pw_shell}, not /bin/false",
        "user no-such-user-here: missing"]


def test_directories_missing_or_with_another_mode_or_owner_differ(tmp_path: Path) -> None:
    good, mode, gone, file = (tmp_path / n for n in ("good", "mode", "gone", "file"))
    good.mkdir(mode=0o700)
    mode.mkdir(mode=0o755)
    file.write_text("")
    good.chmod(0o700)
    mode.chmod(0o755)
    want = {"paths": [str(p) for p in (good, mode, gone, file)], "owner": ME.pw_name,
            "group": os.getgid(), "mode": "0700"}
    assert host_state.dirs_differ([want]) == [str(mode), str(gone), str(file)]
    other = dict(want, paths=[str(good)], owner=ME.pw_uid + 1)
    assert host_state.dirs_differ([other]) == [str(good)]


def test_unit_states_come_from_one_systemctl_show_in_the_order_asked() -> None:
    run, calls = answering(
        "ActiveState=active\nUnitFileState=enabled\nId=postfix.service\n\n"
        "Id=nginx.service\nActiveState=active\nUnitFileState=disabled\n\n"
        "Id=x.timer\nActiveState=inactive\nUnitFileState=static\n\n"
        "Id=gone.service\nActiveState=inactive\nUnitFileState=\n")
    states = host_state.unit_states(["postfix", "nginx", "x.timer", "gone"], run=run)
    assert states == {"postfix": {"active": True, "enabled": True},
                      "nginx": {"active": True, "enabled": False},
                      "x.timer": {"active": False, "enabled": True},
                      "gone": {"active": False, "enabled": False}}
    assert len(calls) == 1 and calls[0][-4:] == ["postfix", "nginx", "x.timer", "gone"]
