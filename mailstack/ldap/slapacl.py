"""Ask slapacl about an ACL expectation matrix: one shell script, one parse.

slapacl prints ``<attr>: ALLOWED|DENIED`` on stderr and exits 0 either way, so the answer is
read from the text. Used by ``check --with-daemons`` and by verify's host checks.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence

from mailstack.plan import layout


def script(rows: Iterable[Mapping[str, object]], config_dir: str = layout.SLAPD_D) -> str:
    """A shell script asking slapacl each (who, dn, attr, access) row, marked ``@@N``."""
    lines = []
    for i, row in enumerate(rows):
        who = f"-D {shlex.quote(str(row['who']))}" if row["who"] else ""
        lines.append(f"echo @@{i}; slapacl -F {config_dir} {who} -b {shlex.quote(str(row['dn']))}"
                     f" {row['attr']}/{row['access']} 2>&1")
    return "\n".join(lines)


def parse(output: str) -> dict[int, bool]:
    """Row number -> allowed, for every row slapacl answered."""
    answers: dict[int, bool] = {}
    current = -1
    for line in output.splitlines():
        if line.startswith("@@"):
            current = int(line[2:])
        elif "ALLOWED" in line or "DENIED" in line:
            answers[current] = "ALLOWED" in line
    return answers


def disagreements(rows: Sequence[Mapping[str, object]], output: str) -> list[str]:
    """Each row whose answer is not the expected one, as a sentence."""
    answers = parse(output)
    out = []
    for i, row in enumerate(rows):
        got = answers.get(i)
        if got is None or got != row["expected"]:
            said = "no answer" if got is None else "ALLOWED" if got else "DENIED"
            want = "ALLOWED" if row["expected"] else "DENIED"
            out.append(f"{row['who'] or 'anonymous'} {row['attr']}/{row['access']} on "
                       f"{row['dn']}: {said}, expected {want} ({row['why']})")
    return out
