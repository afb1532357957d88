"""mailstack.mail.tree (plugins/modules/tree.py): stage, swap, roll back, clean, on a temp dir."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mailstack import resources

spec = importlib.util.spec_from_file_location("mailstack_tree", resources.MODULES / "tree.py")
assert spec and spec.loader
tree = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tree)


def test_stage_swap_rollback_and_the_diff(tmp_path: Path) -> None:
    live, stage, prev = tmp_path / "postfix", tmp_path / "stage", tmp_path / "prev"
    live.mkdir()
    (live / "main.cf").write_text("myhostname = old\n")
    (live / "relay.sasl").write_text("[relay] user:old-password\n")
    (live / "keep.cf").write_text("kept\n")
    tree.stage(str(live), str(stage))
    assert (stage / "keep.cf").read_text() == "kept\n"  # the whole directory, staged
    (stage / "main.cf").write_text("myhostname = new\n")
    (stage / "relay.sasl").write_text("[relay] user:new-password\n")
    (stage / "new.cf").write_text("added\n")
    files = {str(live / "main.cf"): {"secret": False}, str(live / "relay.sasl"): {"secret": True},
             str(live / "new.cf"): {"secret": False}, str(live / "keep.cf"): {"secret": False}}
    paths, diff = tree.changes(str(live), str(stage), files)
    assert paths == [str(live / "main.cf"), str(live / "new.cf"), str(live / "relay.sasl")]
    assert "-myhostname = old\n+myhostname = new\n" in diff
    assert f"--- /dev/null\n+++ {live / 'new.cf'}" in diff
    assert f"--- {live / 'relay.sasl'}\n{tree.HIDDEN}" in diff
    assert "password" not in diff
    tree.swap(str(live), str(stage), str(prev))
    assert (live / "main.cf").read_text() == "myhostname = new\n"
    assert (prev / "main.cf").read_text() == "myhostname = old\n" and not stage.exists()
    # not swapped and live present: nothing to put back; after a swap: the previous comes back
    assert tree.rollback(str(live), str(prev), swapped=False) is False
    assert tree.rollback(str(live), str(prev), swapped=True) is True
    assert (live / "main.cf").read_text() == "myhostname = old\n" and not prev.exists()


def test_an_interrupted_swap_is_put_back(tmp_path: Path) -> None:
    live, prev = tmp_path / "dovecot", tmp_path / "prev"
    prev.mkdir()
    (prev / "dovecot.conf").write_text("old\n")
    assert tree.rollback(str(live), str(prev), swapped=False) is True  # live was missing
    assert (live / "dovecot.conf").read_text() == "old\n"


def test_a_rename_the_kernel_refuses_across_layers_falls_back_to_mv(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """overlayfs answers EXDEV for a directory of a lower layer (seen: /etc/postfix of the
    lab image); GNU mv copies then removes."""
    import errno
    import os

    def refuse(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(tree.os, "rename", refuse)
    live, stage, prev = tmp_path / "live", tmp_path / "stage", tmp_path / "prev"
    live.mkdir()
    stage.mkdir()
    (live / "a").write_text("old\n")
    (stage / "a").write_text("new\n")
    os.chmod(stage / "a", 0o640)
    tree.swap(str(live), str(stage), str(prev))
    assert (live / "a").read_text() == "new\n" and (prev / "a").read_text() == "old\n"
    assert (live / "a").stat().st_mode & 0o777 == 0o640 and not stage.exists()


def test_staging_puts_back_a_swap_that_was_cut_off(tmp_path: Path) -> None:
    """SSH dropped between the swap's two renames: live is missing, prev holds the old tree.
    The next apply's stage puts it back first, so the stage is the whole old tree."""
    live, stage, prev = tmp_path / "postfix", tmp_path / "stage", tmp_path / "prev"
    prev.mkdir()
    (prev / "main.cf").write_text("old\n")
    (prev / "dynamicmaps.cf").write_text("debian's\n")
    tree.stage(str(live), str(stage), str(prev))
    assert (live / "main.cf").read_text() == "old\n" and not prev.exists()
    assert (stage / "dynamicmaps.cf").read_text() == "debian's\n"
    # a live tree is never replaced by prev
    prev.mkdir()
    (prev / "main.cf").write_text("older\n")
    tree.stage(str(live), str(stage), str(prev))
    assert (live / "main.cf").read_text() == "old\n" and (prev / "main.cf").exists()


def test_a_swap_notes_the_pickup_it_leaves_to_the_handlers(tmp_path: Path) -> None:
    """The note is written before the renames: a connection lost after the swap leaves it, and
    the next apply reloads (the handler removes it once the daemon has picked the tree up)."""
    live, stage, prev = tmp_path / "postfix", tmp_path / "stage", tmp_path / "prev"
    live.mkdir()
    stage.mkdir()
    (stage / "main.cf").write_text("new\n")
    pending = tmp_path / "state" / "postfix.reload-pending"
    tree.swap(str(live), str(stage), str(prev), str(pending), "restart")
    assert pending.read_text() == "restart\n"
    assert (live / "main.cf").read_text() == "new\n"
