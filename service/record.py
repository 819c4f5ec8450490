"""The canonical callback record: what the receiver puts on Kafka and consumers read.

The record is versioned (``schema``) so consumers can refuse what they do not
understand instead of misreading it. Money is an exact ``Decimal`` in memory and
a decimal string on the wire; timestamps are UTC ISO-8601 with milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from postback_hub.service.fields import device_key

SCHEMA_VERSION = 1

JsonScalar = str | int | bool
Attribute = JsonScalar | dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_from_millis(millis: int) -> str:
    """``1700000000123`` -> ``2023-11-14T22:13:20.123Z`` (exact, no float on the way)."""
    seconds, ms = divmod(millis, 1000)
    t = time.gmtime(seconds)  # integer arithmetic, and much cheaper than strftime
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms:03d}Z"
    )


def millis_from_iso(text: str) -> int:
    """Inverse of :func:`iso_from_millis`."""
    moment = datetime.fromisoformat(text)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def decimal_text(value: Decimal) -> str:
    """A decimal as plain text, never in exponent notation (``1E+2`` -> ``100``)."""
    text = str(value)  # already plain for the amounts callbacks carry, and cheaper
    return text if "E" not in text else format(value, "f")


# The record types are treated as immutable but not declared frozen: a frozen
# dataclass sets each field through object.__setattr__, which made constructing a
# record (once per callback on both sides of Kafka) several times slower.


@dataclass(slots=True)
class Revenue:
    amount: Decimal
    currency: str | None


@dataclass(slots=True)
class CallbackRecord:
    """One Adjust activity, normalised. Consumers rely on every field listed here."""

    fingerprint: str
    app: str
    activity_kind: str
    environment: str
    created_at: str
    received_at: str
    device: dict[str, str]
    event_token: str | None = None
    revenue: Revenue | None = None
    attributes: dict[str, Attribute] = field(default_factory=dict)
    partner_parameters: dict[str, Any] | str | None = None
    publisher_parameters: dict[str, Any] | str | None = None
    custom: dict[str, str | list[str]] = field(default_factory=dict)
    repeated: dict[str, list[str]] = field(default_factory=dict)

    @property
    def device_key(self) -> str:
        """The id that keeps one device's activities in order: adid, else an advertising id."""
        key = device_key(self.device)
        if key is None:
            raise ValueError("a callback record without a device id")
        return key

    @property
    def partition_key(self) -> bytes:
        return f"{self.app}:{self.device_key}".encode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "fingerprint": self.fingerprint,
            "app": self.app,
            "activity_kind": self.activity_kind,
            "environment": self.environment,
            "created_at": self.created_at,
            "received_at": self.received_at,
            "device": self.device,
            "event_token": self.event_token,
            "revenue": None
            if self.revenue is None
            else {
                "amount": decimal_text(self.revenue.amount),
                "currency": self.revenue.currency,
            },
            "attributes": self.attributes,
            "partner_parameters": self.partner_parameters,
            "publisher_parameters": self.publisher_parameters,
            "custom": self.custom,
            "repeated": self.repeated,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallbackRecord:
        """Takes ownership of ``data``'s nested dicts (no copies: this is per message)."""
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"unsupported callback record schema {data.get('schema')!r}")
        revenue = data.get("revenue")
        return cls(
            fingerprint=data["fingerprint"],
            app=data["app"],
            activity_kind=data["activity_kind"],
            environment=data["environment"],
            created_at=data["created_at"],
            received_at=data["received_at"],
            device=data["device"],
            event_token=data.get("event_token"),
            revenue=None
            if revenue is None
            else Revenue(Decimal(revenue["amount"]), revenue.get("currency")),
            attributes=data.get("attributes") or {},
            partner_parameters=data.get("partner_parameters"),
            publisher_parameters=data.get("publisher_parameters"),
            custom=data.get("custom") or {},
            repeated=data.get("repeated") or {},
        )

    @classmethod
    def from_json(cls, raw: bytes) -> CallbackRecord:
        return cls.from_dict(orjson.loads(raw))
