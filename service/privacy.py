"""Masking of personal data for anything a person reads (CLI output, dry-run logs)."""

from __future__ import annotations

from typing import Any

from postback_hub.service.fields import DEVICE_ID_FIELDS

# Attributes that identify a person or a device beyond the device ids themselves.
PERSONAL_ATTRIBUTES = frozenset({"ip_address", "user_agent", "postal_code"})


def mask(value: str, keep: int = 4) -> str:
    """``38400000-8cf0-11bd-b23e-10b96e40000d`` -> ``********000d``: enough to match, not to use."""
    if len(value) <= keep * 2:
        return "*" * len(value)
    return "*" * 8 + value[-keep:]


def masked_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a serialised callback record safe to print.

    Device ids and personal attributes are masked wherever they appear; the
    customer's own keys may hold anything (user ids, e-mails), so their values are too.
    """
    sensitive = PERSONAL_ATTRIBUTES | set(DEVICE_ID_FIELDS)
    masked = dict(record)
    masked["device"] = {name: mask(value) for name, value in record.get("device", {}).items()}
    masked["attributes"] = {
        name: mask(str(value)) if name in PERSONAL_ATTRIBUTES else value
        for name, value in record.get("attributes", {}).items()
    }
    masked["repeated"] = {
        name: [mask(v) for v in values] if name in sensitive else values
        for name, values in record.get("repeated", {}).items()
    }
    masked["custom"] = {
        name: [mask(v) for v in value] if isinstance(value, list) else mask(value)
        for name, value in record.get("custom", {}).items()
    }
    return masked
