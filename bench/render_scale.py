"""Print how long check + plan + render take as a site grows (accounts and aliases).

    .venv/bin/python bench/render_scale.py [N ...]

Figures, not a pass/fail test: compare runs side by side on the same machine.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from mailstack import core

ROOT = Path(__file__).resolve().parent.parent
HEAD = (ROOT / "inventories/branch-office/site.yml").read_text().split("\naccounts:")[0]


def site_text(n: int) -> str:
    lines = [HEAD, "accounts:"]
    for i in range(n):
        extra = ", aliases: [postmaster@krasnoyarsk.example.org]" if i == 0 else ""
        lines.append(f"  - {{mail: user{i}@krasnoyarsk.example.org, name: User {i}{extra}}}")
    lines.append("aliases:")
    for i in range(0, n, 10):
        lines.append(f"  - {{address: team{i}@krasnoyarsk.example.org, "
                     f"to: [user{i}@krasnoyarsk.example.org]}}")
    return "\n".join(lines) + "\n"


def main(sizes: list[int]) -> None:
    print(f"{'accounts':>8} {'secrets s':>10} {'check s':>8} {'render s':>9} {'peak MiB':>9} "
          f"{'files':>6} {'dit.ldif KiB':>13}")
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="mailstack-bench-"))
        try:
            site = tmp / "site.yml"
            site.write_text(site_text(n))
            t0 = time.perf_counter()
            core.make_secrets(site)
            t1 = time.perf_counter()
            core.check(site)
            t2 = time.perf_counter()
            tracemalloc.start()
            out = core.render(site, tmp / "build")
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            t3 = time.perf_counter()
            files = sum(1 for p in out.rglob("*") if p.is_file())
            dit = (out / "mail/var/lib/mailstack/ldap/dit.ldif").stat().st_size / 1024
            print(f"{n:>8} {t1 - t0:>10.2f} {t2 - t1:>8.2f} {t3 - t2:>9.2f} "
                  f"{peak / 2**20:>9.1f} {files:>6} {dit:>13.0f}")
        finally:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10, 100, 1000, 3000])
