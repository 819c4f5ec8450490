"""Revenue as exact integers, and which table answers which part of a range. Pure."""

from __future__ import annotations

from decimal import Decimal

import pytest

from postback_hub.kpi.exact import join, split, tidy
from postback_hub.kpi.grains import GRAINS, pieces, usable

WEEK, DAY, HOUR, QUARTER = 7 * 86_400, 86_400, 3_600, 900
T0 = 1_700_006_400  # 2023-11-15T00:00:00Z


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("12.34", (12, 340_000_000, None)),
        ("0.000000001", (0, 1, None)),
        ("-1.5", (-2, 500_000_000, None)),  # floor: -2 + 0.5
        ("999999999999.999999999", (999_999_999_999, 999_999_999, None)),
        ("1E+3", (1000, 0, None)),
        ("0.0000000001", (0, 0, "0.0000000001")),  # 10 decimals: kept as text
        ("1000000000000", (0, 0, "1000000000000")),  # 10^12: kept as text
        ("1E+300", (0, 0, "1" + "0" * 300)),
    ],
)
def test_split(text: str, parts: tuple[int, int, str | None]) -> None:
    assert split(Decimal(text)) == parts


def test_summed_parts_join_to_the_exact_sum() -> None:
    amounts = [Decimal(a) for a in ("0.1", "0.2", "-0.05", "123.456789", "1E-12", "7")]
    units = nanos = 0
    rest = Decimal(0)
    for amount in amounts:
        u, n, r = split(amount)
        units, nanos = units + u, nanos + n
        rest += Decimal(r) if r is not None else 0
    assert nanos >= 10**9  # a summed nanos column overflows into units on reading
    expected = Decimal("130.706789000001")  # 0.1 + 0.2 - 0.05 + 123.456789 + 1E-12 + 7
    assert join(units, nanos, str(rest)) == expected
    assert str(join(units, nanos, str(rest))) == "130.706789000001"


@pytest.mark.parametrize(
    ("value", "text"), [("1.50", "1.5"), ("1E+2", "100"), ("0.000", "0"), ("-2.10", "-2.1")]
)
def test_tidy_is_plain_and_short(value: str, text: str) -> None:
    assert str(tidy(Decimal(value))) == text


def test_a_range_of_whole_days_reads_weeks_and_days() -> None:
    # T0 is a Wednesday; Unix time's 7-day periods start on Thursdays (1970-01-01).
    assert (T0 // DAY) % 7 == 6
    assert [(p.grain.seconds, p.start, p.end) for p in pieces(T0, T0 + 31 * DAY, GRAINS)] == [
        (DAY, T0, T0 + DAY),
        (WEEK, T0 + DAY, T0 + 29 * DAY),
        (DAY, T0 + 29 * DAY, T0 + 31 * DAY),
    ]


def test_a_range_at_an_offset_is_cut_into_coarsest_pieces() -> None:
    start = T0 - 19_800  # 00:00 at +05:30 is 18:30Z the day before
    end = start + 3 * DAY
    got = [(p.grain.seconds, p.start, p.end) for p in pieces(start, end, GRAINS)]
    assert got == [
        (QUARTER, start, start + 1_800),  # 18:30 -> 19:00
        (HOUR, start + 1_800, T0),  # 19:00 -> 24:00
        (DAY, T0, T0 + 2 * DAY),
        (HOUR, T0 + 2 * DAY, T0 + 2 * DAY + 64_800),  # 00:00 -> 18:00
        (QUARTER, T0 + 2 * DAY + 64_800, end),  # 18:00 -> 18:30
    ]
    assert end == T0 + 2 * DAY + 66_600


def test_pieces_are_disjoint_and_cover_the_range() -> None:
    for start, end in [(T0 + 900, T0 + 900 * 7), (T0 - 3 * 900, T0 + DAY + 5 * 900), (T0, T0)]:
        covered = [(p.start, p.end) for p in pieces(start, end, GRAINS)]
        flat = [b for s, e in covered for b in range(s, e, QUARTER)]
        assert flat == list(range(start, end, QUARTER))
        for piece in pieces(start, end, GRAINS):
            assert piece.start % piece.grain.seconds == 0
            assert piece.end % piece.grain.seconds == 0


def test_period_groupings_use_only_grains_that_nest_in_their_periods() -> None:
    seconds = [
        [g.seconds for g in usable(periods)]
        for periods in (
            [],
            [(DAY, 0)],
            [(DAY, 19_800)],  # local days at +05:30
            [(DAY, -28_800)],  # local days at -08:00
            [(HOUR, 19_800)],
        )
    ]
    assert seconds == [
        [WEEK, DAY, HOUR, QUARTER],
        [DAY, HOUR, QUARTER],
        [QUARTER],
        [HOUR, QUARTER],
        [QUARTER],
    ]


def test_drill_downs_below_the_network_read_only_the_detailed_table() -> None:
    assert [g.seconds for g in usable([], ["network", "country", "attribution"])] == [
        WEEK,
        DAY,
        HOUR,
        QUARTER,
    ]
    for column in ("tracker", "campaign", "adgroup", "creative"):
        assert [g.seconds for g in usable([], ["network", column])] == [QUARTER]
