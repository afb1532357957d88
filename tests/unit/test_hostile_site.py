"""Hostile site files: refused with a clear error, bounded by counts (not timers), never a
traceback; and a fuzzed loader."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstack import checks
from mailstack.errors import MailstackError
from mailstack.site import load
from mailstack.site.load import load_site
from tests.conftest import EXAMPLE

LAUGHS = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]) + "\n"


@pytest.mark.parametrize(("text", "message"), [
    ("a: &a [*a]\n", "1: (top): a YAML alias refers to the value that contains it"),
    ("site: &s {hosts: *s}\n", "1: (top): a YAML alias refers to the value that contains it"),
    (LAUGHS, "YAML aliases expand to more than 10000 values (refused: this is how a "
             "billion-laughs file starts)"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", "the YAML is nested too deeply (at most 32 levels)"),
    ("[" * 3000 + "]" * 3000 + "\n", "the YAML is nested too deeply (at most 32 levels)"),
    ("site: !!int x1\n", "1: site: cannot read the value 'x1' (tag:yaml.org,2002:int)"),
    ("site: !!timestamp 2026-13-45\n", "1: site: cannot read the value '2026-13-45'"),
    ("? !!float nope\n: x\n", "1: (top): cannot read the value 'nope'"),
    ("site: x\ndomains: [a\x00]\n", "2: (top): the site file holds the character U+0000, "
                                      "which YAML does not allow"),
    # found by the fuzzer: the timestamp constructor fails with AttributeError on bad text
    ("!!timestamp site: x\n", "1: (top): cannot read the value 'site' "
                               "(tag:yaml.org,2002:timestamp): not a valid timestamp"),
])
def test_resource_exhaustion_is_refused_with_a_clear_error(tmp_path: Path, text: str,
                                                          message: str) -> None:
    site = tmp_path / "site.yml"
    site.write_text(text, encoding="utf-8")
    with pytest.raises(MailstackError) as caught:
        load_site(site)
    assert str(caught.value).startswith(str(site)) and message in str(caught.value)


def test_a_file_over_the_size_limit_is_not_read(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "MAX_BYTES", 100)
    site = tmp_path / "site.yml"
    site.write_text("# " + "x" * 200 + "\n")
    with pytest.raises(MailstackError, match=r"site\.yml: the site file has 203 bytes; at most "
                                             r"100 are read"):
        load_site(site)


def test_ordinary_anchors_and_aliases_still_work(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "    ca_secret: lab/head-office-ca\n", "    ca_secret: &ca lab/head-office-ca\n", 1)
    site = tmp_path / "site.yml"
    site.write_text(text + "# an alias used once is fine\nx-note: *ca\n", encoding="utf-8")
    with pytest.raises(MailstackError, match=r"x-note: unknown key"):
        load_site(site)  # refused for the unknown key, not for the alias
    site.write_text(text, encoding="utf-8")
    assert load_site(site).relays["head-office"].ca_secret == "lab/head-office-ca"


BASE = EXAMPLE.read_text(encoding="utf-8")
EDITS = st.lists(st.tuples(st.integers(0, len(BASE)), st.integers(0, 12),
                           st.sampled_from(["", ":", "- ", "\n", "  ", "&a ", "*a", "[", "]",
                                            "{", "}", "'", '"', "#", ",", "\\x00", "é", "0",
                                            "ivan@", "%", "!!python/object:os.system ",
                                            "? ", "|\n", ">-\n", "\t", "!!int ",
                                            "!!float ", "!!timestamp ", "!!binary "])),
                 min_size=1, max_size=6)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=EDITS)
def test_a_fuzzed_site_file_is_loaded_or_refused_never_a_traceback(tmp_path: Path,
                                                                   edits: list) -> None:
    text = BASE
    for at, cut, insert in edits:
        at = min(at, len(text))
        text = text[:at] + insert + text[at + cut:]
    site = tmp_path / "site.yml"
    site.write_text(text, encoding="utf-8")
    try:
        loaded = load_site(site)
    except MailstackError as err:
        assert str(err).startswith(str(site)), err  # FILE:LINE: key.path: message
        return
    for finding in checks.run(loaded, None):
        assert str(finding).startswith(str(site)), finding
