"""The reconciliation core: scopes, tolerance, verdicts and causes, without I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from postback_hub.adjust.pull_parse import Table
from postback_hub.adjust.reconcile import (
    Evidence,
    Tolerance,
    compare,
    render,
    setting_differences,
    table_counts,
)

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
LATER = datetime(2026, 4, 1, tzinfo=UTC)


def test_tolerance_needs_both_the_ratio_and_the_floor() -> None:
    tolerance = Tolerance()
    assert not tolerance.beyond(Decimal(96), Decimal(100))  # 4 < 5
    assert tolerance.beyond(Decimal(95), Decimal(100))  # 5 >= 5 and 5 % > 1 %
    assert not tolerance.beyond(Decimal(995), Decimal(1000))  # 0.5 % of 1000
    assert tolerance.beyond(Decimal(989), Decimal(1000))  # 11 > 10
    assert tolerance.beyond(Decimal(5), Decimal(0))
    strict = Tolerance(ratio=Decimal(0), minimum=Decimal(1))
    assert strict.beyond(Decimal(99), Decimal(100))


def test_lines_overall_per_network_and_country() -> None:
    ours = {
        (D1, "Facebook", "de", "installs"): Decimal(90),
        (D1, "Google", "de", "installs"): Decimal(50),
    }
    theirs = {
        (D1, "Facebook", "de", "installs"): Decimal(100),
        (D1, "Google", "de", "installs"): Decimal(50),
        (D1, "Google", "us", "installs"): Decimal(3),
    }
    lines = compare(ours, theirs, Tolerance(), Evidence(now=LATER, utc_offset_s=0))
    by = {(line.scope, line.value): line for line in lines}
    assert (by[("all", "")].ours, by[("all", "")].theirs) == (Decimal(140), Decimal(153))
    assert by[("all", "")].verdict == "missing"
    assert by[("network", "Facebook")].difference == Decimal(-10)
    assert by[("network", "Google")].verdict == "within"  # 3 short: under the floor
    assert by[("country", "de")].verdict == "missing"
    assert by[("country", "us")].verdict == "within"
    assert by[("network", "Facebook")].ratio == Decimal("0.9000")
    # A gap nothing explains says so in the table.
    assert "unexplained" in render(lines)


def test_causes_no_callback_rejections_and_sandbox() -> None:
    theirs = {
        (D1, "Organic", "de", "reattributions"): Decimal(20),
        (D1, "Organic", "de", "installs"): Decimal(100),
        (D2, "Organic", "de", "installs"): Decimal(100),
    }
    ours = {
        (D1, "Organic", "de", "installs"): Decimal(80),
        (D2, "Organic", "de", "installs"): Decimal(100),
    }
    evidence = Evidence(
        now=datetime(2026, 3, 3, 1, 0, tzinfo=UTC),  # 03-01 complete, 03-02 not
        utc_offset_s=0,
        rejections={(D1, "install"): {"invalid_secret": 12, "missing_device_id": 3}},
        sandbox={(D1, "installs"): Decimal(5)},
    )
    lines = compare(ours, theirs, Tolerance(), evidence)
    overall = {(line.day, line.kpi): line for line in lines if line.scope == "all"}
    reattributions = overall[(D1, "reattributions")]
    assert [c.code for c in reattributions.causes] == ["no_callback"]
    installs = overall[(D1, "installs")]
    assert [c.code for c in installs.causes] == ["rejected", "sandbox"]
    assert "15 install callbacks answered 4xx" in installs.causes[0].text
    assert overall[(D2, "installs")].verdict == "match"


def test_a_day_inside_the_retry_window_is_named_incomplete() -> None:
    # -08:00: 2026-03-01 ends at 08:00 UTC on 03-02; retries run until 08:00 UTC on 03-03.
    evidence = Evidence(now=datetime(2026, 3, 3, 7, 59, tzinfo=UTC), utc_offset_s=-8 * 3600)
    lines = compare({}, {(D1, "X", "us", "installs"): Decimal(10)}, Tolerance(), evidence)
    assert "incomplete" in [c.code for c in lines[0].causes]
    assert "2026-03-03T08:00Z" in lines[0].causes[-1].text
    after = Evidence(now=datetime(2026, 3, 3, 8, 0, tzinfo=UTC), utc_offset_s=-8 * 3600)
    lines = compare({}, {(D1, "X", "us", "installs"): Decimal(10)}, Tolerance(), after)
    assert "incomplete" not in [c.code for c in lines[0].causes]


def test_more_than_adjust_is_named_duplicates_and_settings_are_named() -> None:
    evidence = Evidence(
        now=LATER, utc_offset_s=0, settings=("utc_offset: binding +05:30, account +00:00",)
    )
    lines = compare(
        {(D1, "X", "us", "events:abc"): Decimal(30)},
        {(D1, "X", "us", "events:abc"): Decimal(20)},
        Tolerance(),
        evidence,
    )
    assert lines[0].verdict == "extra"
    assert [c.code for c in lines[0].causes] == ["duplicates", "settings"]


def test_setting_differences() -> None:
    binding = {"utc_offset": "+05:30", "attribution_types": ["click"], "sandbox": False}
    account = {"utc_offset": "+00:00", "attribution_types": ["click"], "sandbox": False}
    assert setting_differences(binding, account, "account") == (
        "utc_offset: binding +05:30, account +00:00",
    )


def test_table_counts_needs_the_reconciliation_grouping() -> None:
    table = Table(("day", "network", "country"))
    table.add(("2026-03-01", "X", "de"), "installs", Decimal(3))
    assert table_counts(table) == {(D1, "X", "de", "installs"): Decimal(3)}
    with pytest.raises(ValueError, match="by day, network and country"):
        table_counts(Table(("day",)))
