"""testinfra fixtures: the host under test's part of the manifest, named by environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def host_plan() -> dict:
    manifest = json.loads(Path(os.environ["MAILSTACK_MANIFEST"]).read_text(encoding="utf-8"))
    return manifest["hosts"][os.environ["MAILSTACK_HOST"]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "managed_file" in metafunc.fixturenames:
        manifest = json.loads(Path(os.environ["MAILSTACK_MANIFEST"]).read_text(encoding="utf-8"))
        files = manifest["hosts"][os.environ["MAILSTACK_HOST"]]["files"]
        metafunc.parametrize("managed_file", [(p, files[p]) for p in sorted(files)],
                             ids=sorted(files))
