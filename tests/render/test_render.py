"""Render: golden files of the example, byte-identical reruns, atomic writes, manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from mailstack import core
from mailstack.errors import InputError
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "fixtures" / "golden"


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_golden_render_of_the_example(example, tmp_path) -> None:
    out = core.render(example, tmp_path / "build")
    got = tree(out)
    if os.environ.get("MAILSTACK_UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN / "krasnoyarsk", ignore_errors=True)
        for rel, data in got.items():
            (GOLDEN / "krasnoyarsk" / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / "krasnoyarsk" / rel).write_bytes(data)
    want = tree(GOLDEN / "krasnoyarsk")
    assert sorted(got) == sorted(want)
    for rel in want:
        assert got[rel] == want[rel], f"{rel} differs (MAILSTACK_UPDATE_GOLDEN=1 to accept)"


def test_render_is_byte_identical_and_replaces_atomically(example, tmp_path) -> None:
    first = tree(core.render(example, tmp_path / "a"))
    second = tree(core.render(example, tmp_path / "a"))
    assert first == second
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["krasnoyarsk"]


def test_render_keeps_what_others_put_beside_it(example, tmp_path) -> None:
    out = core.render(example, tmp_path / "build")
    (out / "lab").mkdir()
    (out / "lab" / "lab.json").write_text("{}")
    (out / "oldhost").mkdir()  # a host of an earlier render that is gone now
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["hosts"]["oldhost"] = {}
    (out / "manifest.json").write_text(json.dumps(manifest))
    out = core.render(example, tmp_path / "build")
    assert (out / "lab" / "lab.json").read_text() == "{}"
    assert not (out / "oldhost").exists()


def test_bad_input_changes_nothing(example, tmp_path) -> None:
    out = core.render(example, tmp_path / "build")
    before = tree(out)
    example.write_text(example.read_text().replace("relay:", "relya:"))
    with pytest.raises(InputError) as err:
        core.render(example, tmp_path / "build")
    assert str(err.value).endswith("relya: unknown key; did you mean 'relay'?")
    assert tree(out) == before
    assert [p.name for p in (tmp_path / "build").iterdir()] == ["krasnoyarsk"]


def test_manifest_describes_every_file(example, tmp_path) -> None:
    out = core.render(example, tmp_path / "build")
    manifest = json.loads((out / "manifest.json").read_text())
    files = manifest["hosts"]["mail"]["files"]
    on_disk = {"/" + p.relative_to(out / "mail").as_posix()
               for p in (out / "mail").rglob("*") if p.is_file()}
    assert set(files) == on_disk
    for path, meta in files.items():
        local = out / "mail" / path.lstrip("/")
        assert meta["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()
        assert meta["secret"] == (not int(meta["mode"], 8) & 0o004)
        assert (local.stat().st_mode & 0o777) == (0o600 if meta["secret"] else 0o644)
    assert files["/etc/postfix/ldap/virtual_mailbox_maps.cf"] | {"sha256": ""} == {
        "mode": "0640", "owner": "root", "group": "postfix", "secret": True, "sha256": "",
        "role": "postfix", "pickup": "reload"}
    assert (out.stat().st_mode & 0o777) == 0o700


def test_rendered_files_hold_no_site_file_secret_and_ldap_values_are_escaped(write_site,
                                                                            tmp_path) -> None:
    from tests.unit.test_site_checks import GOOD

    site = write_site(GOOD.replace("name: Ivan Petrov", 'name: "Petrov, Ivan (*)"'))
    out = core.render(site, tmp_path / "build")
    dit = (out / "mail/var/lib/mailstack/ldap/dit.ldif").read_text()
    assert "cn: Petrov, Ivan (*)" in dit
    assert "dn: mail=ivan@krasnoyarsk.example.org,ou=people," in dit
