"""mailstack.mail.compare (plugins/modules/compare.py): which of the manifest's files differ."""

from __future__ import annotations

import grp
import hashlib
import importlib.util
import os
import pwd
from pathlib import Path

from mailstack import resources

spec = importlib.util.spec_from_file_location(
    "mailstack_compare", resources.MODULES / "compare.py")
assert spec and spec.loader
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def entry(path: Path, text: str, mode: str = "0644") -> dict:
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "mode": mode,
            "owner": pwd.getpwuid(os.getuid())[0], "group": grp.getgrgid(os.getgid())[0]}


def test_each_difference_is_named(tmp_path: Path) -> None:
    same, content, mode, gone, folder = (tmp_path / n for n in ("same", "content", "mode",
                                                                "gone", "folder"))
    for path in (same, content, mode):
        path.write_text("a\n")
        path.chmod(0o644)
    folder.mkdir()
    files = {str(same): entry(same, "a\n"), str(content): entry(content, "b\n"),
             str(mode): entry(mode, "a\n", "0600"), str(gone): entry(gone, "a\n"),
             str(folder): entry(folder, "a\n")}
    why = compare.compare(files)
    assert why == {str(content): ["content"], str(mode): ["mode"], str(gone): ["missing"],
                   str(folder): ["not a file"]}
    other = dict(files[str(same)], owner="nobody-such", group="nogroup-such")
    assert compare.compare({str(same): other}) == {str(same): ["owner", "group"]}
