"""The office lab: one lab of the example site shared by the modules that prove how an office
works together (groups and lists, shared folders and the folder tree, Sieve and the audit
trail) and how accounts come and go (test_reconcile, test_users). Brought up once per session
on first use and applied once; the site differs from the example in two lines: slapd serves
the network (StartTLS on 389, for `passwd --self`) and the lab's addresses are never banned
(the tests refuse logins on purpose). A test that changes the deployment puts it back
(``Office.apply()``) before it ends, so the modules may run in any order; `make test` runs the
suite on two workers (``--dist loadfile``), and each worker that runs an office module brings
up its own office lab once.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstack import core, lab, secrets, verify
from mailstack.container import Container
from mailstack.plan import layout
from mailstack.site.load import load_site
from tests.conftest import LabSite, example_lab_site

HOSTNAME = "mail.krasnoyarsk.example.org"


class Office(LabSite):
    """The example's lab, applied; the client container runs the test's clients."""

    def __init__(self, site: Path, build: Path, root: Path) -> None:
        super().__init__(site, build)
        self.root = root
        model = load_site(site)
        store = secrets.SecretStore(root / "secrets")
        self.password = {a.mail: store.read(layout.account_secret(a)) for a in model.accounts}
        self.client = Container(self.state.client.name)

    def client_run(self, script: str, timeout: int = 300, **job: object) -> object:
        """Run a Python script in the lab's client with the job (JSON, ``host`` added) as its
        only argument; its stdout read as JSON."""
        proc = self.client.exec(["python3", "-c", script, json.dumps({"host": HOSTNAME, **job})],
                                timeout=timeout)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def checks(self, parts: list[str]) -> dict[str, verify.Check]:
        """verify's probe parts ``parts`` only (no host checks)."""
        report = verify.verify(self.site, lab=True, build_dir=self.build, parts=parts,
                               host_checks=False)
        return {c.name: c for c in report.checks}

    def host_checks(self, keyword: str) -> dict[str, verify.Check]:
        """verify's host checks whose test names match ``keyword`` (pytest -k)."""
        h = self.state.host("mail")
        target = verify.Target(h.key, h.hostname, h.ip, "root", str(self.state.key))
        manifest = core.render(self.site, self.build) / "manifest.json"
        return {c.name: c for c in verify._host_checks(target, manifest, keyword=keyword)}

    def journal(self, since: str) -> str:
        return self.sh(f"journalctl --since '{since}' --no-pager -o cat")

    def now(self) -> str:
        return self.sh("date '+%Y-%m-%d %H:%M:%S'").strip()


@pytest.fixture(scope="session")
def office_lab(tmp_path_factory) -> Iterator[Office]:
    root = tmp_path_factory.mktemp("office")
    site, build = example_lab_site(root, "office")
    text = site.read_text(encoding="utf-8")
    # tests refuse logins on purpose: the lab's addresses are never banned
    text = text.replace("  never: []", "  never: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]")
    # slapd serves port 389 (StartTLS only): `mailstack user passwd --self` binds there
    text = text.replace("  loglevel: [stats]\n", "  loglevel: [stats]\n  network: true\n", 1)
    assert "10.0.0.0/8" in text and "network: true" in text
    site.write_text(text, encoding="utf-8")
    secrets.generate(load_site(site), root / "secrets")
    try:
        started = time.monotonic()
        lab.up(site, build_dir=build)
        world = Office(site, build, root)
        world.apply()
        print(f"\n[office lab up and first apply: {time.monotonic() - started:.0f} s]")
        yield world
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)
