"""KPI names, event_kpis shortcuts and utc_offset parsing: pure rules of the KPI API."""

from __future__ import annotations

from datetime import date

import pytest

from postback_hub.kpi.api import ApiError, format_offset, parse_offset
from postback_hub.kpi.kpis import KpiError, check_app_kpis, parse_event_kpis
from postback_hub.kpi.query import KpiQuery, utc_range

D = 1_700_006_400  # 2023-11-15T00:00:00Z


def labels(text: str, tokens: list[str]) -> list[str]:
    return [k.label for k in parse_event_kpis(text, tokens)]


def test_event_kpi_shortcuts_follow_the_seeds_order() -> None:
    assert labels("token1_revenue|events|revenue_per_event", []) == [
        "token1_revenue",
        "token1_events",
        "token1_revenue_per_event",
    ]
    tokens = ["token1", "token2"]
    assert labels("all_revenue|events", tokens) == [
        "token1_revenue",
        "token1_events",
        "token2_revenue",
        "token2_events",
    ]
    assert labels("all_revenue,all_events", tokens) == [
        "token1_revenue",
        "token2_revenue",
        "token1_events",
        "token2_events",
    ]
    # The longest KPI name wins: revenue_per_revenue_event is not "..._revenue_event".
    assert labels("abc_revenue_per_revenue_event", []) == ["abc_revenue_per_revenue_event"]


@pytest.mark.parametrize("name", ["daus", "maus", "cost", "ecpi", "cohort_revenue", "ctr"])
def test_kpis_callbacks_cannot_determine_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(KpiError, match=f"{name} cannot be computed from callbacks: .+"):
        check_app_kpis([name])


def test_first_events_is_refused() -> None:
    with pytest.raises(KpiError, match="first_events cannot be computed"):
        parse_event_kpis("tok_first_events", [])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("05:30", 19_800), ("+05:30", 19_800), (" 05:45", 20_700), ("-08:00", -28_800), (None, 0)],
)
def test_utc_offsets(text: str | None, seconds: int) -> None:
    assert parse_offset(text) == seconds


@pytest.mark.parametrize("text", ["5:30", "05:10", "15:00", "-08:60", "abc"])
def test_bad_utc_offsets(text: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_offset(text)
    assert raised.value.field == "utc_offset"


def test_format_offset_round_trips() -> None:
    assert [format_offset(parse_offset(t)) for t in ("+05:30", "-08:00")] == ["05:30", "-08:00"]


def test_local_dates_as_utc_bounds() -> None:
    day = date(2023, 11, 15)
    plus = KpiQuery("demo", day, day, utc_offset_s=19_800)
    assert utc_range(plus) == (D - 19_800, D + 86_400 - 19_800)
    minus = KpiQuery("demo", day, day, utc_offset_s=-28_800)
    assert utc_range(minus) == (D + 28_800, D + 86_400 + 28_800)
