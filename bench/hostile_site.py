"""Time and peak memory of refusing hostile site files (the suite tests the refusals by count;
this prints how long each takes and how much memory it costs).

    .venv/bin/python bench/hostile_site.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailstack.errors import MailstackError  # noqa: E402
from mailstack.site import load  # noqa: E402


def laughs(levels: int) -> str:
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


def cases() -> list[tuple[str, str]]:
    big_value = "site: '" + "x" * (load.MAX_BYTES - 100) + "'\n"
    return [
        ("billion laughs, 9 levels (9^9 values if expanded)", laughs(9)),
        ("nesting 100,000 deep ([[[...]]])", "[" * 100_000 + "]" * 100_000 + "\n"),
        ("nesting 40 deep in a mapping", "a: " + "[" * 40 + "]" * 40 + "\n"),
        ("one value just under the size limit (64 MiB)", big_value),
        ("a file just over the size limit", big_value + "#" * 200 + "\n"),
        ("10,000 aliases of one anchor", "a: &a x\nb: [" + ", ".join(["*a"] * 10_001) + "]\n"),
    ]


def main() -> int:
    print("\nhostile site files: what refusing each costs (traced peak memory)")
    print(f"{'case':<52} {'seconds':>8} {'peak MiB':>9}  result")
    worst = (0.0, 0.0, "")
    loaded = 0
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site.yml"
        for name, text in cases():
            site.write_text(text, encoding="utf-8")
            tracemalloc.start()
            start = time.perf_counter()
            try:
                load.load_site(site)
                result = "loaded"
            except MailstackError as err:
                result = str(err).split(": ", 1)[1][:60]
            elapsed = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            print(f"{name:<52} {elapsed:>8.3f} {peak:>9.1f}  {result}")
            worst = max(worst, (elapsed, peak, name))
            loaded += result == "loaded"
    print(f"=> {len(cases())} hostile files, {loaded} loaded; the slowest refusal took "
          f"{worst[0]:.3f} s ({worst[2]}, {worst[1]:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
