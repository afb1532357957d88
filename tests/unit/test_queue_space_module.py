"""mailstack.mail.queue_space (plugins/modules/queue_space.py): Postfix's own free-space rule."""

from __future__ import annotations

import importlib.util

from mailstack import resources

spec = importlib.util.spec_from_file_location("mailstack_queue_space",
                                              resources.MODULES / "queue_space.py")
assert spec and spec.loader
queue_space = importlib.util.module_from_spec(spec)
spec.loader.exec_module(queue_space)

MIB = 1024 * 1024


def test_postfix_wants_one_and_a_half_times_the_size_limit_or_queue_minfree() -> None:
    assert queue_space.need(50 * MIB, 0) == 75 * MIB
    assert queue_space.need(50 * MIB, 200 * MIB) == 200 * MIB
    assert queue_space.need(0, 0) == 0  # no size limit and no minimum: any room will do


def test_the_verdict_names_the_host_the_queue_the_figures_and_the_answer() -> None:
    assert queue_space.verdict("mail", "/var/spool/postfix", 75 * MIB, 50 * MIB, 0) is None
    said = queue_space.verdict("mail", "/var/spool/postfix", 9 * MIB, 50 * MIB, 0)
    assert said is not None
    assert said.startswith("mail: Postfix's queue file system (/var/spool/postfix) has 9.0 MiB "
                           "free, less than the 75.0 MiB Postfix needs to take mail (1.5 x "
                           "message_size_limit 50.0 MiB)")
    assert "452 4.3.1 Insufficient system storage" in said
    assert "Nothing of Postfix was changed" in said
    said = queue_space.verdict("mail", "/q", 100 * MIB, 50 * MIB, 300 * MIB)
    assert said is not None and "(queue_minfree 300.0 MiB)" in said
