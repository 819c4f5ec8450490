"""One callback as a rollup delta: the key it is counted under and what it adds. Pure.

The grain (:class:`RollupKey`) is fine enough for every question the KPI API
answers: a 15-minute UTC bucket (every UTC offset Adjust offers is a multiple
of 15 minutes, so local days are whole numbers of buckets), and every dimension
the API filters or groups by. A blank dimension is the empty string and the
organic tracker is the value ``Organic``: both are values of their own, never
NULL, so they never collide in a primary key.

The bucket is that of the activity (``created_at``), never of its arrival: a
callback Adjust retries hours later lands where it happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from postback_hub.service.record import CallbackRecord, millis_from_iso

BUCKET_S = 15 * 60
_BUCKET_MS = BUCKET_S * 1000

ORGANIC = "Organic"
# Kinds whose users are, by the activity itself, installed or reattributed users
# (used when the callback carries no {is_reattributed}).
_INSTALLED_KINDS = frozenset({"install", "reinstall", "rejected_install"})
_REATTRIBUTED_KINDS = frozenset(
    {"reattribution", "reattribution_reinstall", "rejected_reattribution"}
)
TRACKER_LEVELS = ("network", "campaign", "adgroup", "creative")


@dataclass(frozen=True, slots=True)
class RollupKey:
    """Where a callback is counted. Field order is the store's primary key order."""

    app: str
    environment: str
    bucket: int  # Unix seconds of the bucket's start, a multiple of BUCKET_S (UTC)
    activity_kind: str
    event_token: str
    tracker: str  # Adjust's tracker token from {tracker}, "" when absent
    network: str
    campaign: str
    adgroup: str
    creative: str
    country: str
    os_name: str
    device_type: str
    attribution: str  # "installed", "reattributed", or "" when unknown
    rejection_reason: str
    currency: str  # the currency of `revenue`, "" when the callback named none

    @property
    def names(self) -> tuple[str, str, str, str]:
        return (self.network, self.campaign, self.adgroup, self.creative)


@dataclass(slots=True)
class Measures:
    """Additive measures; ``revenue`` is exact."""

    count: int = 0
    revenue: Decimal = Decimal(0)
    revenue_events: int = 0

    def add(self, other: Measures) -> None:
        self.count += other.count
        self.revenue += other.revenue
        self.revenue_events += other.revenue_events


def bucket_of(created_at: str) -> int:
    """The start (Unix seconds) of the 15-minute UTC bucket holding an ISO-8601 instant."""
    millis = millis_from_iso(created_at)
    return (millis // _BUCKET_MS) * BUCKET_S


def _text(record: CallbackRecord, name: str) -> str:
    value = record.attributes.get(name)
    return value.strip() if isinstance(value, str) else ""


def tracker_names(record: CallbackRecord) -> tuple[str, str, str, str]:
    """Network, campaign, adgroup, creative: each from its own placeholder, else from
    ``tracker_name``'s ``::`` parts. An organic callback without names is ``Organic``."""
    parts = _text(record, "tracker_name").split("::")
    if len(parts) > 4:  # a creative name that itself contains "::"
        parts = [*parts[:3], "::".join(parts[3:])]
    parts += [""] * (4 - len(parts))
    names = [
        _text(record, f"{level}_name") or parts[index].strip()
        for index, level in enumerate(TRACKER_LEVELS)
    ]
    if not any(names) and record.attributes.get("is_organic") is True:
        names[0] = ORGANIC
    return names[0], names[1], names[2], names[3]


def attribution_of(record: CallbackRecord) -> str:
    flag = record.attributes.get("is_reattributed")
    if isinstance(flag, bool):
        return "reattributed" if flag else "installed"
    if record.activity_kind in _INSTALLED_KINDS:
        return "installed"
    if record.activity_kind in _REATTRIBUTED_KINDS:
        return "reattributed"
    return ""


def revenue_of(record: CallbackRecord) -> tuple[Decimal, str] | None:
    """Revenue and its currency: Adjust's reporting-currency amount when the callback
    carries it (``reporting_revenue`` with ``reporting_currency``), else the amount as sent."""
    reporting = record.attributes.get("reporting_revenue")
    reporting_currency = record.attributes.get("reporting_currency")
    if isinstance(reporting, str) and isinstance(reporting_currency, str):
        return Decimal(reporting), reporting_currency
    if record.revenue is None:
        return None
    return record.revenue.amount, record.revenue.currency or ""


def rollup(record: CallbackRecord) -> tuple[RollupKey, Measures]:
    """The key ``record`` is counted under and the measures it adds (count 1)."""
    network, campaign, adgroup, creative = tracker_names(record)
    revenue = revenue_of(record)
    amount, currency = revenue if revenue is not None else (Decimal(0), "")
    key = RollupKey(
        app=record.app,
        environment=record.environment,
        bucket=bucket_of(record.created_at),
        activity_kind=record.activity_kind,
        event_token=record.event_token or "",
        tracker=_text(record, "tracker"),
        network=network,
        campaign=campaign,
        adgroup=adgroup,
        creative=creative,
        country=_text(record, "country").lower(),
        os_name=_text(record, "os_name").lower(),
        device_type=_text(record, "device_type").lower(),
        attribution=attribution_of(record),
        rejection_reason=_text(record, "rejection_reason").lower(),
        currency=currency,
    )
    is_revenue_event = record.activity_kind == "event" and revenue is not None
    return key, Measures(1, amount, 1 if is_revenue_event else 0)


def aggregate(records: list[CallbackRecord]) -> dict[RollupKey, Measures]:
    """Rollup deltas of many records, summed per key (one upsert per key and batch)."""
    deltas: dict[RollupKey, Measures] = {}
    for record in records:
        key, measures = rollup(record)
        existing = deltas.get(key)
        if existing is None:
            deltas[key] = measures
        else:
            existing.add(measures)
    return deltas
