"""The pure mapping from a callback record to its rollup key and measures."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from postback_hub.kpi.rollup import BUCKET_S, ORGANIC, aggregate, rollup
from postback_hub.service.normalise import normalise
from postback_hub.service.record import CallbackRecord

D = 1_700_006_400  # 2023-11-15T00:00:00Z


def record(kind: str = "install", **fields: str) -> CallbackRecord:
    pairs = [("activity_kind", kind), ("adid", "0123456789abcdef0123456789abcdef"), *fields.items()]
    received = time.time_ns() // 1_000_000
    return normalise(
        pairs, app="demo", aliases={}, default_environment="production", received_at_millis=received
    )


def test_the_bucket_is_the_activitys_not_the_arrivals() -> None:
    late = record(created_at_milli=str((D + 899) * 1000 + 999))  # 00:14:59.999
    key, _ = rollup(late)
    assert key.bucket == D
    next_bucket, _ = rollup(record(created_at_milli=str((D + 900) * 1000)))
    assert next_bucket.bucket == D + BUCKET_S


def test_names_come_from_placeholders_else_from_tracker_name() -> None:
    key, _ = rollup(record(tracker_name="Net::Camp::Ad::Cr", campaign_name="Other"))
    assert key.names == ("Net", "Other", "Ad", "Cr")
    key, _ = rollup(record(tracker_name="Net::Camp::Ad::Cr::with::colons"))
    assert key.creative == "Cr::with::colons"


def test_organic_and_blank_are_values_of_their_own() -> None:
    organic, _ = rollup(record(is_organic="1"))
    blank, _ = rollup(record())
    assert (organic.network, blank.network) == (ORGANIC, "")
    assert organic != blank


@pytest.mark.parametrize(
    ("fields", "amount"),
    [
        ({"revenue": "199", "currency": "usd"}, Decimal("1.99")),  # cents
        ({"revenue_float": "1.99", "currency": "USD"}, Decimal("1.99")),  # units
        ({"revenue": "5", "revenue_float": "0.10", "currency": "USD"}, Decimal("0.10")),
    ],
)
def test_revenue_cents_and_units(fields: dict[str, str], amount: Decimal) -> None:
    key, measures = rollup(record("event", event="tok", **fields))
    assert (measures.revenue, measures.revenue_events, key.currency) == (amount, 1, "USD")


def test_reporting_revenue_wins_over_the_original_currency() -> None:
    fields = {"revenue_float": "2", "currency": "EUR", "reporting_revenue": "2.2"}
    key, measures = rollup(record("event", event="tok", reporting_currency="USD", **fields))
    assert (measures.revenue, key.currency) == (Decimal("2.2"), "USD")


def test_dimensions_and_attribution() -> None:
    key, measures = rollup(
        record(
            "session",
            country="DE",
            os_name="iOS",
            device_type="Phone",
            is_reattributed="1",
            environment="sandbox",
        )
    )
    assert (key.country, key.os_name, key.device_type) == ("de", "ios", "phone")
    assert (key.attribution, key.environment, measures.count) == ("reattributed", "sandbox", 1)
    rejected, _ = rollup(record("rejected_install", rejection_reason="ANON_IP"))
    assert (rejected.attribution, rejected.rejection_reason) == ("installed", "anon_ip")


def test_aggregate_sums_per_key() -> None:
    records = [record("event", event="t", revenue_float="0.1", currency="USD") for _ in range(3)]
    (measures,) = aggregate(records).values()
    assert (measures.count, measures.revenue, measures.revenue_events) == (3, Decimal("0.3"), 3)
