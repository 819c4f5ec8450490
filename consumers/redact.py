"""Masking a partner request for a log line (dry run): whatever the template did with them,
the record's device ids, personal attributes and the destination's secrets do not appear."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from postback_hub.consumers.delivery import HttpRequest
from postback_hub.service.privacy import PERSONAL_ATTRIBUTES, mask
from postback_hub.service.record import CallbackRecord


def sensitive_values(record: CallbackRecord, secrets: Iterable[str]) -> list[str]:
    values = list(record.device.values()) + list(secrets)
    values += [str(v) for k, v in record.attributes.items() if k in PERSONAL_ATTRIBUTES]
    # The customer's own keys may hold user ids or e-mails.
    for value in record.custom.values():
        values += value if isinstance(value, list) else [value]
    return [v for v in values if v]


def redact_text(text: str, values: Iterable[str]) -> str:
    # Longest first, so a value containing another is masked whole.
    for value in sorted(set(values), key=len, reverse=True):
        for form in {value, quote(value, safe=""), quote_plus(value)}:
            text = text.replace(form, mask(value))
    return text


def describe_request(
    request: HttpRequest, record: CallbackRecord, secrets: Iterable[str]
) -> dict[str, object]:
    values = sensitive_values(record, secrets)
    return {
        "method": request.method,
        "url": redact_text(request.full_url, values),
        "headers": {name: redact_text(v, values) for name, v in request.headers.items()},
        "body": None
        if request.body is None
        else redact_text(request.body.decode("utf-8", "replace"), values),
    }
