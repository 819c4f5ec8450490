"""From a callback record to X's ``conversion_event`` parameters: pure functions only.

Conversion type per activity, device-id normalisation and hashing (HMAC-SHA256 with
the app's key), revenue in micros, optional metadata, and the attribution windows
per conversion type (configuration, overridden by windows synced from X, which
:mod:`postback_hub.consumers.x.tags` reads). No I/O, no clock, no secrets kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal

from postback_hub.consumers.delivery import Skip
from postback_hub.consumers.x.config import (
    CLICK_WINDOWS,
    CONVERSION_TYPES,
    VIEW_THROUGH_WINDOWS,
    XApp,
)
from postback_hub.service.record import CallbackRecord

REATTRIBUTION_KINDS = frozenset({"reattribution", "reinstall", "reattribution_reinstall"})
# X's defaults when a conversion type has no windows of its own.
DEFAULT_WINDOWS = (14, 1)

Windows = Mapping[str, tuple[int, int]]


def decode_key(key_b64: str) -> bytes:
    """X issues the HMAC key base64-encoded; the raw bytes are the key."""
    try:
        return base64.b64decode(key_b64.strip(), validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError("the X HMAC key is not valid base64") from exc


def normalise_device_id(device_id: str, mode: str) -> str:
    value = device_id.strip()
    if mode == "lower":
        return value.lower()
    if mode == "upper":
        return value.upper()
    if mode == "lower_no_hyphens":
        return value.lower().replace("-", "")
    return value


def hash_device_id(key: bytes, device_id: str) -> str:
    """base64(HMAC-SHA256(key, device id)): 44 characters, standard alphabet, padded."""
    digest = hmac.digest(key, device_id.encode(), "sha256")
    return base64.b64encode(digest).decode()


def extra_device_id(key: bytes, device_id: str) -> str:
    """The HMAC-SHA256 of the lower-case hex SHA1 of the device id (X's extra_device_ids)."""
    sha1_hex = hashlib.sha1(device_id.encode(), usedforsecurity=False).hexdigest()
    return hash_device_id(key, sha1_hex)


def conversion_type(record: CallbackRecord, app: XApp) -> str | Skip:
    kind = record.activity_kind
    if kind == "install":
        return "INSTALL"
    if kind in REATTRIBUTION_KINDS:
        return "RE_ENGAGE"
    if kind == "event":
        mapped = app.event_conversions.get(record.event_token or "")
        return mapped if mapped is not None else Skip("event_not_mapped")
    if kind == "session":
        return app.session_conversion if app.session_conversion else Skip("sessions_not_mapped")
    return Skip("kind_not_forwarded")


def price_micro(amount: Decimal) -> int:
    """Revenue in micros, exactly: 4.99 -> 4990000 (sub-micro amounts round half-even)."""
    return int((amount * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))


def _integer_parameter(record: CallbackRecord, name: str | None) -> str | None:
    if name is None or not isinstance(record.partner_parameters, dict):
        return None
    value = record.partner_parameters.get(name)
    text = str(value).strip() if value is not None else ""
    # ASCII digits only: str.isdigit also accepts the likes of "²" and "٣".
    return text if text.isascii() and text.isdigit() else None


# conversion_event's parameter names: in every signature, so each signer encodes them once.
QUERY_NAMES = (
    "app_id",
    "conversion_time",
    "conversion_type",
    "hashed_device_id",
    "os_type",
    "click_window",
    "view_through_window",
    "extra_device_ids",
    "price_micro",
    "price_currency",
    "device_ip_address",
    "number_items",
    "level",
)


def conversion_params(
    record: CallbackRecord,
    app: XApp,
    key: bytes,
    windows: Windows,
) -> dict[str, str] | Skip:
    """The query parameters of one conversion_event, or why it is not sent."""
    kind = conversion_type(record, app)
    if isinstance(kind, Skip):
        return kind
    id_field = "idfa" if app.os_type == "IOS" else "gps_adid"
    raw_id = record.device.get(id_field)
    if not raw_id:
        return Skip(f"no_{id_field}")
    device_id = normalise_device_id(raw_id, app.normalisation)
    click, view = windows.get(kind, DEFAULT_WINDOWS)
    params = {
        "app_id": app.app_id,
        "conversion_time": record.created_at,
        "conversion_type": kind,
        "hashed_device_id": hash_device_id(key, device_id),
        "os_type": app.os_type,
        "click_window": str(click),
        "view_through_window": str(view),
    }
    if app.send_extra_device_ids:
        params["extra_device_ids"] = extra_device_id(key, device_id)
    if record.revenue is not None and record.revenue.currency:
        params["price_micro"] = str(price_micro(record.revenue.amount))
        params["price_currency"] = record.revenue.currency
    ip = record.attributes.get("ip_address")
    if app.send_device_ip and isinstance(ip, str):
        params["device_ip_address"] = ip
    for name, parameter in (
        ("number_items", app.number_items_parameter),
        ("level", app.level_parameter),
    ):
        value = _integer_parameter(record, parameter)
        if value is not None:
            params[name] = value
    return params


def app_windows(app: XApp, synced: Windows | None = None) -> dict[str, tuple[int, int]]:
    """(click, view-through) windows per conversion type: the app's configuration,
    overridden by ``synced`` (windows adopted from X's event tags, already checked)."""
    windows: dict[str, tuple[int, int]] = {k: w.resolved() for k, w in app.windows.items()}
    windows.update(synced or {})
    return windows


# What every conversion_event repeats besides the OAuth protocol's strings (a signer
# encodes them once); with each app's store id.
REPEATED_STRINGS = (
    *QUERY_NAMES,
    "IOS",
    "ANDROID",
    *CONVERSION_TYPES,
    *(str(days) for days in sorted({*CLICK_WINDOWS, *VIEW_THROUGH_WINDOWS})),
)
