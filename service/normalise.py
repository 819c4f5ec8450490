"""Turn decoded request pairs into a :class:`CallbackRecord`. Pure: no I/O, no clock.

Rules (and why):
- An absent key, an empty value and an unreplaced ``{placeholder}`` are alike:
  Adjust drops placeholders that have no data.
- A canonical field sent twice with the same value is one value. Sent with
  different values, the first wins and every value is kept under ``repeated``,
  so nothing the sender wrote is lost and the choice is visible downstream.
- Unknown keys are the customer's own data: kept verbatim under ``custom``
  (a list when repeated).
- Only what can never succeed is rejected (Adjust drops a 4xx for good):
  undecodable numbers, timestamps, flags, currencies and countries, a missing
  activity kind or device id, and an event without its token.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from postback_hub.service.errors import BadRequest
from postback_hub.service.fields import DEVICE_ID_FIELDS, FIELD_KINDS, Kind, device_key
from postback_hub.service.record import (
    Attribute,
    CallbackRecord,
    Revenue,
    decimal_text,
    iso_from_millis,
)
from postback_hub.service.wire import Pairs

_UNREPLACED_PLACEHOLDER = re.compile(r"\{[A-Za-z0-9_]+\}")
_ACTIVITY_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_MILLIS = re.compile(r"[0-9]{1,15}")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")
# Far beyond any real amount, and short of where decimal arithmetic would round.
_MAX_DIGITS = 27
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_ZERO_ID = re.compile(r"[0-]+")
_TRUE = frozenset({"1", "true", "True", "TRUE"})
_FALSE = frozenset({"0", "false", "False", "FALSE"})
# 9999-12-31T23:59:59.999Z: the last instant an ISO-8601 year of four digits can show.
_MAX_MILLIS = 253_402_300_799_999
ENVIRONMENTS = frozenset({"production", "sandbox"})


def _invalid(field: str, message: str) -> BadRequest:
    return BadRequest("invalid_value", message, field)


def _millis_from_seconds(text: str, field: str) -> int:
    if not _SECONDS.fullmatch(text):
        raise _invalid(field, "expected Unix seconds, e.g. 1700000000")
    millis = int((Decimal(text) * 1000).to_integral_value())
    if millis > _MAX_MILLIS:
        raise _invalid(field, "timestamp is beyond the year 9999")
    return millis


def _millis(text: str, field: str) -> int:
    if not _MILLIS.fullmatch(text):
        raise _invalid(field, "expected Unix milliseconds, e.g. 1700000000123")
    millis = int(text)
    if millis > _MAX_MILLIS:
        raise _invalid(field, "timestamp is beyond the year 9999")
    return millis


def _decimal(text: str, field: str) -> Decimal:
    if not _DECIMAL.fullmatch(text):
        raise _invalid(field, "expected a decimal number, e.g. 1.99")
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid literals
        raise _invalid(field, "expected a decimal number, e.g. 1.99") from None
    if len(value.as_tuple().digits) > _MAX_DIGITS:
        raise _invalid(field, f"more than {_MAX_DIGITS} significant digits")
    return value


def _cents_to_units(cents: Decimal) -> Decimal:
    """Exactly cents / 100: shift the exponent, no rounding to a context precision."""
    sign, digits, exponent = cents.as_tuple()
    assert isinstance(exponent, int)
    return Decimal((sign, digits, exponent - 2))


def _flag(text: str, field: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _invalid(field, "expected 1 or 0")


def _json_object(text: str) -> dict[str, Any] | str:
    try:
        parsed = orjson.loads(text)
        # orjson reads 1024 levels but writes 255: keep what we could not store as text.
        orjson.dumps(parsed)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return text
    return parsed if isinstance(parsed, dict) else text


def is_absent(value: str) -> bool:
    return value == "" or _UNREPLACED_PLACEHOLDER.fullmatch(value) is not None


def is_zero_device_id(value: str) -> bool:
    """IDFA (and ad ids) of all zeros mean the user denied tracking: not an id at all."""
    return _ZERO_ID.fullmatch(value) is not None


def fingerprint(
    app: str,
    device_key: str,
    activity_kind: str,
    created_at_millis: int | None,
    event_token: str | None,
    random: str | None,
    nonce: str | None,
) -> str:
    """A stable id of one activity, so Adjust's duplicates are recognisable downstream."""
    parts = (
        "v1",
        app,
        device_key,
        activity_kind,
        "" if created_at_millis is None else str(created_at_millis),
        event_token or "",
        random or "",
        nonce or "",
    )
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


# Conflicting values for these decide where data goes or what it is: fail safe.
_MUST_AGREE = frozenset({"activity_kind", "environment", "event", *DEVICE_ID_FIELDS})


def _collect(
    pairs: Pairs, aliases: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]], dict[str, str | list[str]]]:
    """Split pairs into canonical values (first wins), their wire names, repeats and custom keys."""
    values: dict[str, str] = {}
    wire_names: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    custom: dict[str, str | list[str]] = {}
    for key, value in pairs:
        canonical = aliases.get(key, key)
        if canonical not in FIELD_KINDS:
            previous = custom.get(key)
            if previous is None:
                custom[key] = value
            elif isinstance(previous, list):
                previous.append(value)
            else:
                custom[key] = [previous, value]
            continue
        if is_absent(value):
            continue
        if canonical not in values:
            values[canonical] = value
            wire_names[canonical] = key
        elif values[canonical] != value:
            if canonical in _MUST_AGREE:
                raise BadRequest(
                    "conflicting_values", f"{key} is given twice with different values", key
                )
            repeated.setdefault(canonical, [values[canonical]]).append(value)
    return values, wire_names, repeated, custom


def normalise(
    pairs: Pairs,
    *,
    app: str,
    aliases: Mapping[str, str],
    default_environment: str,
    received_at_millis: int,
) -> CallbackRecord:
    """Build the canonical record, or raise :class:`BadRequest` naming the offending key."""
    values, wire_names, repeated, custom = _collect(pairs, aliases)

    def name(canonical: str) -> str:
        return wire_names.get(canonical, canonical)

    kind_text = values.pop("activity_kind", None)
    if kind_text is None:
        raise BadRequest("missing_field", "activity_kind is required", "activity_kind")
    activity_kind = kind_text.strip().lower()
    if not _ACTIVITY_KIND.fullmatch(activity_kind):
        raise _invalid(name("activity_kind"), "not an activity kind, e.g. install or event")

    environment = values.pop("environment", default_environment).strip().lower()
    if environment not in ENVIRONMENTS:
        raise _invalid(name("environment"), "expected production or sandbox")

    device: dict[str, str] = {}
    for id_field in DEVICE_ID_FIELDS:
        raw_id = values.pop(id_field, None)
        if raw_id is None:
            continue
        device_id = raw_id.strip()
        if device_id and not is_zero_device_id(device_id):
            device[id_field] = device_id
    key = device_key(device)
    if key is None:
        raise BadRequest(
            "missing_field", "a device id is required (adid, or an advertising id)", "adid"
        )

    event_token = values.pop("event", None)
    if activity_kind == "event" and event_token is None:
        raise BadRequest("missing_field", "an event callback needs its event token", "event")

    created_millis: int | None = None
    milli_text = values.pop("created_at_milli", None)
    seconds_text = values.pop("created_at", None)
    if seconds_text is not None:
        created_millis = _millis_from_seconds(seconds_text, name("created_at"))
    if milli_text is not None:
        created_millis = _millis(milli_text, name("created_at_milli"))

    revenue = _revenue(values, name)
    random, nonce = values.get("random"), values.get("nonce")

    attributes: dict[str, Attribute] = {}
    partner_parameters: dict[str, Any] | str | None = None
    publisher_parameters: dict[str, Any] | str | None = None
    for canonical, text in values.items():
        kind = FIELD_KINDS[canonical]
        wire = name(canonical)
        if kind is Kind.TIMESTAMP:
            attributes[canonical] = iso_from_millis(_millis_from_seconds(text, wire))
        elif kind is Kind.INTEGER:
            if not _INTEGER.fullmatch(text):
                raise _invalid(wire, "expected a whole number")
            attributes[canonical] = int(text)
        elif kind is Kind.FLAG:
            attributes[canonical] = _flag(text, wire)
        elif kind is Kind.DECIMAL:
            attributes[canonical] = decimal_text(_decimal(text, wire))
        elif kind is Kind.CURRENCY:
            if not _CURRENCY.fullmatch(text):
                raise _invalid(wire, "expected an ISO 4217 currency code, e.g. EUR")
            attributes[canonical] = text.upper()
        elif kind is Kind.COUNTRY:
            if not _COUNTRY.fullmatch(text):
                raise _invalid(wire, "expected an ISO 3166 alpha-2 country code, e.g. de")
            attributes[canonical] = text.lower()
        elif canonical == "partner_parameters":
            partner_parameters = _json_object(text)
        elif canonical == "publisher_parameters":
            publisher_parameters = _json_object(text)
        else:
            attributes[canonical] = text

    if created_millis is None and random is None and nonce is None:
        # Nothing identifies this activity in time: two distinct sessions of a device
        # must not collide, so the receipt time stands in (a retry by Adjust then
        # counts as new; templates should carry created_at_milli).
        created_for_identity: int | None = received_at_millis
    else:
        created_for_identity = created_millis
    return CallbackRecord(
        fingerprint=fingerprint(
            app,
            key,
            activity_kind,
            created_for_identity,
            event_token,
            random,
            nonce,
        ),
        app=app,
        activity_kind=activity_kind,
        environment=environment,
        created_at=iso_from_millis(
            received_at_millis if created_millis is None else created_millis
        ),
        received_at=iso_from_millis(received_at_millis),
        device=device,
        event_token=event_token,
        revenue=revenue,
        attributes=attributes,
        partner_parameters=partner_parameters,
        publisher_parameters=publisher_parameters,
        custom=custom,
        repeated=repeated,
    )


def _revenue(values: dict[str, str], name: Callable[[str], str]) -> Revenue | None:
    """``revenue_float`` (whole units) wins over ``revenue`` (cents); both are exact."""
    units_text = values.pop("revenue_float", None)
    cents_text = values.pop("revenue", None)
    amount: Decimal | None = None
    if cents_text is not None:
        amount = _cents_to_units(_decimal(cents_text, name("revenue")))
    if units_text is not None:
        amount = _decimal(units_text, name("revenue_float"))
    if amount is None:
        return None
    currency_text = values.pop("currency", None)
    if currency_text is not None and not _CURRENCY.fullmatch(currency_text):
        raise _invalid(name("currency"), "expected an ISO 4217 currency code, e.g. EUR")
    return Revenue(amount, None if currency_text is None else currency_text.upper())
