"""The scheduled mode's pure parts: which days are due, the gauges' series, silence."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from postback_hub.adjust.reconcile import Cause, Line
from postback_hub.adjust.reconcile_run import Report
from postback_hub.adjust.reconcile_watch import (
    ReconcileMetrics,
    WatchOptions,
    due_days,
    silent_apps,
)
from postback_hub.kpi.reconciliations import LastActivity

IST = 5 * 3600 + 30 * 60
PST = -8 * 3600


@pytest.mark.parametrize(
    ("now", "offset", "last"),
    [
        # +05:30: 2026-03-01 ends at 18:30 UTC that day; retries run until 18:30 on 03-02.
        (datetime(2026, 3, 2, 18, 29, tzinfo=UTC), IST, date(2026, 2, 28)),
        (datetime(2026, 3, 2, 18, 30, tzinfo=UTC), IST, date(2026, 3, 1)),
        # -08:00: 2026-03-01 ends at 08:00 UTC on 03-02; complete at 08:00 UTC on 03-03.
        (datetime(2026, 3, 3, 7, 59, tzinfo=UTC), PST, date(2026, 2, 28)),
        (datetime(2026, 3, 3, 8, 0, tzinfo=UTC), PST, date(2026, 3, 1)),
    ],
)
def test_a_day_is_due_once_the_retry_window_has_passed(
    now: datetime, offset: int, last: date
) -> None:
    days = due_days(now, offset, 3)
    assert days == [last - timedelta(days=2), last - timedelta(days=1), last]


def test_the_lookback_is_bounded() -> None:
    assert len(due_days(datetime(2026, 3, 5, tzinfo=UTC), 0, 30)) == 30
    with pytest.raises(ValueError, match="1 to 30"):
        WatchOptions(lookback_days=31)
    with pytest.raises(ValueError, match="1 to 30"):
        WatchOptions(lookback_days=0)


def report(days: list[date], theirs: int) -> Report:
    lines: list[Line] = []
    for day in days:
        lines.append(
            Line(
                day,
                "installs",
                "all",
                "",
                Decimal(90),
                Decimal(theirs),
                "missing",
                (Cause("rejected", "x"),),
            )
        )
        lines.append(Line(day, "installs", "network", "X", Decimal(90), Decimal(theirs), "missing"))
        lines.append(Line(day, "events:abc", "all", "", Decimal(3), Decimal(0), "extra"))
    return Report("demo", days[0], days[-1], lines, datetime(2026, 3, 9, tzinfo=UTC))


def test_gauges_follow_the_lookback_and_only_overall_lines() -> None:
    metrics = ReconcileMetrics()
    d1, d2, d3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
    metrics.publish(report([d1, d2], 100))
    sample = metrics.registry.get_sample_value
    installs = {"app": "demo", "day": "2026-03-01", "kpi": "installs"}
    assert sample("postback_hub_reconcile_ours", installs) == 90
    assert sample("postback_hub_reconcile_adjust", installs) == 100
    assert sample("postback_hub_reconcile_ratio", installs) == 0.9
    assert sample("postback_hub_reconcile_gap", installs) == 1
    events = {"app": "demo", "day": "2026-03-01", "kpi": "events:abc"}
    assert sample("postback_hub_reconcile_ratio", events) is None  # Adjust counts 0
    # The next run's window moved on: 03-01 leaves, 03-03 arrives.
    metrics.publish(report([d2, d3], 90))
    assert sample("postback_hub_reconcile_adjust", installs) is None
    later = {"app": "demo", "day": "2026-03-03", "kpi": "installs"}
    assert sample("postback_hub_reconcile_adjust", later) == 90
    text = metrics.render().decode()
    # Per-network lines are not series.
    assert 'value="X"' not in text
    assert "scope" not in text
    series = [line for line in text.splitlines() if line.startswith("postback_hub_reconcile_ours{")]
    assert len(series) == 4  # 2 days x 2 KPIs


def test_last_callback_series_are_bounded() -> None:
    metrics = ReconcileMetrics()
    activities = [LastActivity("demo", "install", "", 1000)]
    activities += [LastActivity("demo", "event", f"t{n:03d}", 2000) for n in range(150)]
    activities.append(LastActivity("demo", "made_up_kind", "", 3000))
    metrics.publish_last(activities)
    text = metrics.render().decode()
    series = [
        line
        for line in text.splitlines()
        if line.startswith("postback_hub_last_callback_timestamp")
    ]
    assert len(series) == 1 + 100 + 1
    assert 'kind="other"' in text
    metrics.publish_last([LastActivity("demo", "install", "", 5000)])
    labels = {"app": "demo", "kind": "install", "event_token": ""}
    assert (
        metrics.registry.get_sample_value("postback_hub_last_callback_timestamp_seconds", labels)
        == 5000
    )
    assert 'event_token="t000"' not in metrics.render().decode()


def test_silence_is_judged_on_installs_of_the_apps_watched() -> None:
    activities = [
        LastActivity("quiet", "install", "", 0),
        LastActivity("quiet", "event", "abc", 50_000),  # events do not count as installs
        LastActivity("busy", "install", "", 40_000),
        LastActivity("unbound", "install", "", 0),
    ]
    found = silent_apps(activities, 43_200, 6 * 3600, ["quiet", "busy"])
    assert found == [("quiet", 43_200)]
