"""Print how long apply takes for one host and for a fleet of three, in the lab.

    .venv/bin/python bench/fleet.py [--hosts 1,3]

The sites are the head-office example (inventories/head-office/site.yml): all of it (a head
office and two branches: three hosts, each with slapd, Postfix and Dovecot; the branches' slapd
a replica), and the head office alone (every account homed there). Each runs in its own lab
(`lab up`, the prepared image), one after the other: the first apply, a second that changes
nothing, then `lab down`. Ansible works on the hosts in parallel (its forks), so three hosts
should cost far less than three times one. Figures, not a pass/fail test. Target (issue 15,
2 shared cores): three hosts' first apply at most 1.5x one host's.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailstack import apply, lab, secrets  # noqa: E402
from mailstack.site.load import load_site  # noqa: E402

EXAMPLE = (ROOT / "inventories/head-office/site.yml").read_text(encoding="utf-8")
BRANCHES = ("  tomsk:\n    hostname: mail.tomsk.taiga.example.org\n"
            "    roles: [ldap-replica, mta, imap]\n",
            "  omsk:\n    hostname: mail.omsk.taiga.example.org\n"
            "    roles: [ldap-replica, mta, imap]\n")


def site_text(hosts: int) -> str:
    text = EXAMPLE.replace("site: taiga", f"site: bench{uuid.uuid4().hex[:6]}", 1)
    if hosts == 1:
        for block in BRANCHES:
            assert block in text
            text = text.replace(block, "")
        text = text.replace("    mailhost: tomsk\n", "").replace("    mailhost: omsk\n", "")
        text = text.replace("    mailhost: hq\n", "")
    return text


def run(hosts: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix=f"bench-fleet{hosts}-"))
    site = root / "site.yml"
    site.write_text(site_text(hosts), encoding="utf-8")
    build = root / "build"
    try:
        lab.ensure_outside_secrets(site, build_dir=build)
        secrets.generate(load_site(site), root / "secrets")
        started = time.monotonic()
        lab.up(site, build_dir=build)
        up = time.monotonic() - started
        state = lab.state(site, build_dir=build)
        figures = {"hosts": hosts, "lab up": up}
        for name in ("first apply", "second apply"):
            report = apply.apply(site, inventory=state.inventory, build_dir=build,
                                 out=lambda line: None)
            assert report.ok, report.lines()
            figures[name] = report.seconds
            figures[f"{name} changed"] = report.changed
        return figures
    finally:
        lab.down(site, build_dir=build)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,3", help="fleet sizes to run (1 and/or 3)")
    sizes = [int(n) for n in parser.parse_args().hosts.split(",")]
    print("apply of the head-office example: one host vs the fleet (lab, prepared image)")
    print(f"{'hosts':>5} {'lab up s':>9} {'first apply s':>14} {'tasks':>6} "
          f"{'second apply s':>15} {'tasks':>6}")
    rows = [run(n) for n in sizes]
    for r in rows:
        print(f"{r['hosts']:>5} {r['lab up']:>9.1f} {r['first apply']:>14.1f} "
              f"{r['first apply changed']:>6} {r['second apply']:>15.1f} "
              f"{r['second apply changed']:>6}")
    if len(rows) == 2:
        print(f"summary: {rows[1]['hosts']} hosts' first apply is "
              f"{rows[1]['first apply'] / rows[0]['first apply']:.2f}x one host's "
              f"(target <= 1.5x); second apply {rows[1]['second apply']:.1f} s vs "
              f"{rows[0]['second apply']:.1f} s")


if __name__ == "__main__":
    main()
