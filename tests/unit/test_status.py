"""`mailstack status`: the lines it prints from what systemd and fetch-run say on a host."""

from __future__ import annotations

from mailstack import status
from mailstack.site.load import load_site

POP = "mailstack-fetch@pop3-shop-provider.example-pop.provider.example"
IMAP = "mailstack-fetch@imap-olga-provider.example-imap.provider.example"
WHEN = "Tue 2026-12-01 02:54:27 UTC"


def test_failed_runs_stopped_timers_and_oversized_messages(example) -> None:
    site = load_site(example)
    seen = {
        f"{POP}.service": {
            "unit": {"LoadState": "loaded", "ActiveState": "failed", "Result": "timeout",
                     "ExecMainCode": "2", "ExecMainStatus": "15",
                     "InactiveEnterTimestamp": WHEN},
            "timer": {"LoadState": "loaded", "ActiveState": "active"},
            "oversized": {"000000016b0e3502": {"size": 312071, "reported": 1796093281}}},
        f"{IMAP}.service": {
            "unit": {"LoadState": "loaded", "ActiveState": "inactive", "Result": "success",
                     "ExecMainCode": "1", "ExecMainStatus": "0",
                     "InactiveEnterTimestamp": WHEN},
            "timer": {"LoadState": "loaded", "ActiveState": "inactive"},
            "oversized": {}},
    }
    report = status.StatusReport(status.describe(site, "mail", seen))
    assert not report.ok
    pop = "pop3 shop@provider.example at pop.provider.example -> ivan@krasnoyarsk.example.org"
    imap = ("imap olga@provider.example at imap.provider.example -> "
            "olga@krasnoyarsk.example.org")
    assert report.text().splitlines() == [
        f"mail: {pop}: FAILED (result: timeout, killed by signal 15; {WHEN}): journalctl -u "
        f"{POP}.service",
        f"mail: {pop}: a message of 312071 bytes (msgid 000000016b0e3502) is over the limit "
        "and waits at the provider (notice sent 2026-12-01 02:48 UTC)",
        f"mail: {imap}: ok (last run ended {WHEN})",
        f"mail: {imap}: the timer {IMAP}.timer is inactive: nothing is collected",
    ]
    seen[f"{IMAP}.service"]["timer"]["ActiveState"] = "active"  # type: ignore[index]
    seen[f"{POP}.service"]["unit"]["ActiveState"] = "inactive"  # type: ignore[index]
    assert status.StatusReport(status.describe(site, "mail", seen)).ok
    missing = status.describe(site, "mail", {})
    assert missing[0].lines == (f"mail: {pop}: not installed ({POP}.service is unknown): apply "
                                "the site",)
