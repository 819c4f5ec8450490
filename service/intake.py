"""From an authenticated HTTP request's parts to a canonical record. Pure: no I/O.

The handler reads the request (bounded) and hands the raw parts here, so the
whole decision "accept as this record, or reject with this error" is testable
without a server.
"""

from __future__ import annotations

from dataclasses import dataclass

from postback_hub.service.auth import IPAddress, check_source, take_secret
from postback_hub.service.errors import PayloadTooLarge
from postback_hub.service.normalise import normalise
from postback_hub.service.record import CallbackRecord
from postback_hub.service.record_privacy import PrivacyStep
from postback_hub.service.settings import AppSettings
from postback_hub.service.wire import parse_body, parse_urlencoded


@dataclass(frozen=True, slots=True)
class RawCallback:
    """The parts of one callback request the receiver looks at."""

    raw_query: bytes
    content_type: str
    body: bytes
    authorization: str | None
    client: IPAddress | None
    received_at_millis: int


def check_size(raw_query: bytes, body: bytes, max_bytes: int) -> None:
    if len(raw_query) + len(body) > max_bytes:
        raise PayloadTooLarge(
            "payload_too_large", f"query string and body exceed {max_bytes} bytes", None
        )


def intake(
    app_key: str,
    app: AppSettings,
    secrets: list[str],
    raw: RawCallback,
    max_bytes: int,
    privacy: PrivacyStep | None = None,
) -> CallbackRecord:
    """Check source, size, encoding and secret; normalise; apply the app's ``privacy``
    step (built once from its options); or raise an IntakeError."""
    check_source(raw.client, app.allow_cidrs)
    check_size(raw.raw_query, raw.body, max_bytes)
    pairs = parse_urlencoded(raw.raw_query)
    pairs.extend(parse_body(raw.content_type, raw.body))
    pairs = take_secret(pairs, app.secret_param, raw.authorization, secrets)
    record = normalise(
        pairs,
        app=app_key,
        aliases=app.aliases,
        default_environment=app.default_environment,
        received_at_millis=raw.received_at_millis,
    )
    return record if privacy is None else privacy.apply(record)
