"""Print how long `check` and `render` take, and their peak memory, as a site grows.

    .venv/bin/python bench/render_scale.py [N ...]      (default: 10 1000 10000)

The site is the bundled example (every feature it shows stays in) plus N accounts, N/10
aliases, N/100 groups (at most 100) and N/10 recipient routes (at most 1,000). Each figure is
the median of three runs of the command (`mailstack check` / `render`, through the CLI), each
in a fresh interpreter (imports included, as a user pays them);
peak memory is the process's maximum resident set (getrusage), taken in the same runs, so no
tracer slows the timing. Figures, not a pass/fail test: compare runs on the same machine.
Targets (issue 14, 2 shared cores): 10,000 accounts check < 1.5 s, render < 2 s, < 150 MiB.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "inventories/branch-office/site.yml").read_text(encoding="utf-8")
FIXED_SECRETS = ROOT / "tests/fixtures/secrets"
DOMAIN = "krasnoyarsk.example.org"
RUNS = 3

MEASURE = r"""
import contextlib, io, json, resource, sys, time
t0 = time.perf_counter()
from mailstack.cli import main
verb, site, out = sys.argv[1:4]
with contextlib.redirect_stdout(io.StringIO()):
    code = main([verb, site] if verb == "check" else [verb, site, "-o", out])
assert code == 0, code
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def insert_after(text: str, header: str, lines: list[str]) -> str:
    """``lines`` right after the line ``header`` (a top-level key of the example)."""
    head, sep, tail = text.partition(f"\n{header}\n")
    assert sep, header
    return head + sep + "".join(line + "\n" for line in lines) + tail


def site_text(n: int) -> str:
    accounts = [f"  - {{mail: user{i}@{DOMAIN}, name: User {i}}}" for i in range(n)]
    aliases = [f"  - {{address: team{i}@{DOMAIN}, to: [user{i}@{DOMAIN}]}}"
               for i in range(0, n, 10)]
    groups = [f"  - {{name: g{i}, members: [{', '.join(f'user{j}@{DOMAIN}' for j in range(i, n, 100))}],"
              f" address: list{i}@{DOMAIN}}}" for i in range(min(100, n // 100))]
    routes = [f'    "@branch{i}.example": head-office' for i in range(min(1000, n // 10))]
    text = insert_after(EXAMPLE, "accounts:", accounts)
    text = insert_after(text, "aliases:", aliases)
    text = insert_after(text, "groups:", groups)
    text = text.replace('  recipients: {"@head-office.example": head-office}',
                        '  recipients:\n    "@head-office.example": head-office\n'
                        + "".join(r + "\n" for r in routes), 1)
    return text


def measure(verb: str, site: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", MEASURE, verb, str(site), str(out)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{verb} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(sizes: list[int]) -> None:
    from mailstack import core

    print("check and render through the CLI (medians of 3 runs, each a fresh interpreter; peak "
          "resident memory)")
    print(f"{'accounts':>8} {'check s':>8} {'check MiB':>10} {'render s':>9} {'render MiB':>11} "
          f"{'files':>6} {'dit.ldif KiB':>13} {'matrix KiB':>11}")
    last: tuple[int, float, float, float, float] | None = None
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="mailstack-bench-"))
        try:
            site = tmp / "site.yml"
            site.write_text(site_text(n), encoding="utf-8")
            shutil.copytree(FIXED_SECRETS, tmp / "secrets",
                            ignore=shutil.ignore_patterns("README.md"))
            for path in (tmp / "secrets").rglob("*"):
                path.chmod(0o700 if path.is_dir() else 0o600)
            core.make_secrets(site)
            checks = [measure("check", site, tmp / "build") for _ in range(RUNS)]
            renders = [measure("render", site, tmp / "build") for _ in range(RUNS)]
            out = tmp / "build" / "krasnoyarsk"
            files = sum(1 for p in out.rglob("*") if p.is_file())
            dit = (out / "mail/var/lib/mailstack/ldap/dit.ldif").stat().st_size / 1024
            matrix = sum(p.stat().st_size for p in out.rglob("acl-expectations.json")) / 1024

            def med(runs: list[dict[str, float]], key: str) -> float:
                return statistics.median(r[key] for r in runs)

            print(f"{n:>8} {med(checks, 'seconds'):>8.2f} {med(checks, 'peak_mib'):>10.0f} "
                  f"{med(renders, 'seconds'):>9.2f} {med(renders, 'peak_mib'):>11.0f} "
                  f"{files:>6} {dit:>13.0f} {matrix:>11.0f}", flush=True)
            last = (n, med(checks, "seconds"), med(renders, "seconds"),
                    med(checks, "peak_mib"), med(renders, "peak_mib"))
        finally:
            shutil.rmtree(tmp)
    if last:
        n, check_s, render_s, check_mib, render_mib = last
        print(f"=> {n:,} accounts: check {check_s:.2f} s, render {render_s:.2f} s, peak "
              f"{max(check_mib, render_mib):.0f} MiB (targets at 10,000: check < 1.5 s, render "
              "< 2 s, < 150 MiB)")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10, 1000, 10000])
