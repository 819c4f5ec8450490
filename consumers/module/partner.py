"""BackInApp-style module partners: routing switches and a configurable HTTP template.

Routing follows how Adjust treats module partners: installs and reattributions
always; sessions only with session forwarding; events only when linked (the
partner's name for the token); rejected installs and reattributions unless
switched off; revenue only with linked events and revenue forwarding on;
partner parameters only when on; "attributions only" limits a partner to the
activities credited to its networks. Sandbox callbacks go to ``sandbox_url`` or
nowhere, never to the production URL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from postback_hub.consumers.delivery import (
    HttpRequest,
    MappingError,
    Outcome,
    Retry,
    Skip,
    classify_http,
    send_http,
)
from postback_hub.consumers.module.config import ModuleDestination, ModulePartnerApp
from postback_hub.consumers.module.template import CUSTOM_PREFIX, UNIX_TIMESTAMPS, Template
from postback_hub.consumers.redact import describe_request
from postback_hub.service.record import CallbackRecord, decimal_text, millis_from_iso

REATTRIBUTION_KINDS = frozenset(
    {"reattribution", "reattribution_reinstall", "rejected_reattribution"}
)
# Attributes that are revenue: shared only with revenue forwarding on.
_REVENUE_ATTRIBUTES = frozenset(
    {"currency", "revenue_usd", "reporting_revenue", "reporting_currency"}
)
_ALWAYS = frozenset({"install", "reattribution"})
_CREATED_AT_NUMBERS = frozenset({"created_at_unix", "created_at_milli"})


def route(record: CallbackRecord, app: ModulePartnerApp | None) -> Skip | None:
    """Why this partner must not get ``record``, or None when it should."""
    if app is None:
        return Skip("app_not_activated")
    kind = record.activity_kind
    if kind == "session" and not app.forward_sessions:
        return Skip("sessions_off")
    if kind == "event" and (record.event_token or "") not in app.event_links:
        return Skip("event_not_linked")
    if kind == "rejected_install" and not app.forward_rejected_installs:
        return Skip("rejected_installs_off")
    if kind == "rejected_reattribution" and not app.forward_rejected_reattributions:
        return Skip("rejected_reattributions_off")
    if kind not in _ALWAYS | {"session", "event", "rejected_install", "rejected_reattribution"}:
        return Skip("kind_not_forwarded")
    if app.attributions_only and _network(record) not in {n.lower() for n in app.network_names}:
        return Skip("not_attributed_to_partner")
    return None


def _network(record: CallbackRecord) -> str:
    """The credited network: ``network_name``, else the first part of ``tracker_name``."""
    network = record.attributes.get("network_name")
    if not isinstance(network, str):
        tracker_name = record.attributes.get("tracker_name")
        network = tracker_name.split("::", 1)[0] if isinstance(tracker_name, str) else ""
    return network.strip().lower()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def context(
    record: CallbackRecord,
    app: ModulePartnerApp,
    credential: str,
    needed: frozenset[str] | None = None,
) -> dict[str, str]:
    """The values the template may use for this record, already gated by the switches.

    ``needed`` (the placeholders of the partner's templates) limits the work to what
    will be rendered; None computes every value.
    """
    attributes = record.attributes
    if needed is None:
        names: Iterable[str] = attributes
    else:
        names = [name for name in needed if name in attributes]
    kind = record.activity_kind
    token = record.event_token
    linked_name = app.event_links.get(token) if kind == "event" and token is not None else None
    # Revenue, in any of its forms, only with a linked event and revenue forwarding on.
    with_revenue = app.forward_revenue and linked_name is not None
    values: dict[str, str] = {
        name: _text(attributes[name])
        for name in names
        if with_revenue or name not in _REVENUE_ATTRIBUTES
    }
    values.update(record.device)
    values["app"] = record.app
    values["activity_kind"] = kind
    values["environment"] = record.environment
    values["fingerprint"] = record.fingerprint
    values["credential"] = credential
    values["created_at"] = record.created_at
    values["received_at"] = record.received_at
    values["is_reattribution"] = "1" if kind in REATTRIBUTION_KINDS else "0"
    if needed is None or not needed.isdisjoint(_CREATED_AT_NUMBERS):
        created_ms = millis_from_iso(record.created_at)
        values["created_at_unix"] = str(created_ms // 1000)
        values["created_at_milli"] = str(created_ms)
    for unix_name, name in UNIX_TIMESTAMPS.items():
        stamp = attributes.get(name)
        if isinstance(stamp, str) and (needed is None or unix_name in needed):
            values[unix_name] = str(millis_from_iso(stamp) // 1000)
    if token is not None:
        values["event_token"] = token
        values["event"] = token  # Adjust's {event} is the token
    if linked_name is not None:
        values["partner_event_name"] = linked_name
        revenue = record.revenue
        if with_revenue and revenue is not None:
            # As Adjust's placeholders: {revenue} in cents, {revenue_float} in units.
            values["revenue"] = decimal_text((revenue.amount * 100).normalize())
            values["revenue_float"] = decimal_text(revenue.amount)
            if revenue.currency:
                values["currency"] = revenue.currency
    if app.forward_partner_parameters and record.partner_parameters is not None:
        values["partner_parameters"] = _text(record.partner_parameters)
    for key, value in record.custom.items():
        values[CUSTOM_PREFIX + key] = ",".join(value) if isinstance(value, list) else value
    return values


class ModulePartner:
    """A destination of ``type = "module"``."""

    def __init__(self, name: str, config: ModuleDestination) -> None:
        self.name = name
        self.settings = config
        self._credentials = {app: link.credential.reveal() for app, link in config.apps.items()}
        template = config.template
        self._url = Template(template.url)
        self._sandbox_url = Template(template.sandbox_url) if template.sandbox_url else None
        self._params = [(name, Template(text)) for name, text in template.params.items()]
        self._headers = [(name, Template(text)) for name, text in template.headers.items()]
        templates = [self._url, *(t for _n, t in self._params), *(t for _n, t in self._headers)]
        if self._sandbox_url is not None:
            templates.append(self._sandbox_url)
        self._needed = frozenset(name for t in templates for name in t.fields)

    def prepare(self, record: CallbackRecord) -> HttpRequest | Skip:
        app = self.settings.apps.get(record.app)
        skip = route(record, app)
        if skip is not None:
            return skip
        assert app is not None
        template = self.settings.template
        if record.environment == "sandbox":
            if self._sandbox_url is None:
                return Skip("sandbox_without_sandbox_url")
            url_template = self._sandbox_url
        else:
            url_template = self._url
        values = context(record, app, self._credentials[record.app], self._needed)
        url = url_template.render(values, url_encode=True)
        if url is None:
            raise MappingError("the URL template has a placeholder this record has no value for")
        params = {
            name: rendered
            for name, text in self._params
            if (rendered := text.render(values)) is not None
        }
        headers = {
            name: rendered
            for name, text in self._headers
            if (rendered := text.render(values)) is not None
        }
        body: bytes | None = None
        if template.encoding == "query":
            return HttpRequest(template.method, url, headers, None, params)
        if template.encoding == "form":
            body = urlencode(params).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            body = orjson.dumps(params)
            headers.setdefault("Content-Type", "application/json")
        return HttpRequest(template.method, url, headers, body)

    async def send(self, session: aiohttp.ClientSession, request: HttpRequest) -> Outcome:
        answer = await send_http(session, request, self.settings.request_timeout_s)
        if isinstance(answer, Retry):
            return answer
        return classify_http(answer.status, answer.headers, answer.body)

    def describe(self, record: CallbackRecord, request: HttpRequest) -> dict[str, object]:
        return describe_request(request, record, self._credentials.values())
