"""X's mobile app conversion API (MACT) as a destination: ``POST /{version}/conversion_event``.

This module only composes the parts, each in a module of its own:
:mod:`~postback_hub.consumers.x.mapping` (record to parameters, pure),
:mod:`~postback_hub.consumers.x.tags` (windows synced from X, read at start),
:mod:`~postback_hub.consumers.x.client` (signing each attempt, what X's answers
mean), :mod:`~postback_hub.consumers.x.ratelimit` (X's rate-limit headers and the
cool-downs after 401/403) and :mod:`~postback_hub.consumers.x.attribution` (X's
decision, published to Kafka). Beyond the required ``prepare`` and ``send`` it
implements the optional protocols ``Describes``, ``Paced``, ``HasTopics`` and
``PublishesAfterDelivery`` of :mod:`postback_hub.consumers.delivery`.

X documents no de-duplication, so the runtime writes an intent mark before each
request and, by default, dead-letters instead of retrying when a request may
have been processed (``on_ambiguous = "dead_letter"``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from postback_hub.consumers.delivery import (
    Delivered,
    HttpRequest,
    Outcome,
    Permanent,
    Retry,
    Skip,
)
from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.consumers.redact import describe_request
from postback_hub.consumers.x.attribution import AttributionPublisher, attribution_topic
from postback_hub.consumers.x.client import XClient, as_x_request, classify_answer
from postback_hub.consumers.x.config import XDestination
from postback_hub.consumers.x.mapping import app_windows, conversion_params, decode_key
from postback_hub.consumers.x.ratelimit import AppLimits
from postback_hub.consumers.x.tags import read_windows
from postback_hub.service.record import CallbackRecord


class XConversions:
    """A destination of ``type = "x"``."""

    def __init__(
        self, name: str, config: XDestination, source_topic: str, *, adopt_event_tags: bool = True
    ) -> None:
        """``adopt_event_tags=False`` leaves synced tags files unread, so a bad one can
        still be replaced by ``x event-tags sync``. Raises ConfigError for a tags file
        X would refuse, ValueError for an HMAC key that is not base64."""
        self.name = name
        self.config = config
        self.client = XClient(config)
        self._keys: dict[str, tuple[bytes, bytes | None]] = {}  # production, development
        self._windows: dict[str, dict[str, tuple[int, int]]] = {}
        for app_key, app in config.apps.items():
            development = app.hmac_key_development
            self._keys[app_key] = (
                decode_key(app.hmac_key.reveal()),
                None if development is None else decode_key(development.reveal()),
            )
            synced = (
                read_windows(app.event_tags_file)
                if adopt_event_tags and app.event_tags_file is not None
                else None
            )
            self._windows[app_key] = app_windows(app, synced)
        self._limits = AppLimits(
            self.client.token_ids, self.client.credential_ids, config.auth_failure_cooldown_s
        )
        self._attributions = AttributionPublisher(attribution_topic(source_topic, name))

    @property
    def attribution_topic(self) -> str:
        return self._attributions.topic

    def extra_topics(self) -> dict[str, dict[str, str]]:
        return self._attributions.topics()

    def attach(self, producer: AIOKafkaProducer, metrics: ConsumerMetrics) -> None:
        self._attributions.attach(producer, metrics)

    def prepare(self, record: CallbackRecord) -> HttpRequest | Skip:
        app = self.config.apps.get(record.app)
        if app is None:
            return Skip("app_not_activated")
        base_url, (key, development_key) = self.config.base_url, self._keys[record.app]
        if record.environment == "sandbox":
            if app.sandbox_base_url is None or development_key is None:
                return Skip("sandbox_without_sandbox_endpoint")
            base_url, key = app.sandbox_base_url, development_key
        params = conversion_params(record, app, key, self._windows[record.app])
        if isinstance(params, Skip):
            return params
        return self.client.request(record.app, "POST", base_url, "conversion_event", params)

    def send_delay(self, request: HttpRequest) -> float:
        return self._limits.send_delay(as_x_request(request).app)

    async def send(self, session: aiohttp.ClientSession, request: HttpRequest) -> Outcome:
        x_request = as_x_request(request)
        app = x_request.app
        if self._limits.cooling_down(app):
            # X refused these credentials a moment ago: no retry storm.
            return Permanent("unauthorized_cooldown")
        gate = self._limits.gate(app)
        await gate.wait()
        answer = await self.client.send(session, x_request)
        if isinstance(answer, Retry):
            return answer
        reset_in = gate.observe(answer.status, answer.headers)
        self._limits.observe(app, answer.status)
        return classify_answer(answer, reset_in)

    async def after_delivery(
        self, record: CallbackRecord, request: HttpRequest, outcome: Delivered
    ) -> asyncio.Future[Any] | None:
        """Publish X's attribution decision; the message settles once it is stored."""
        return await self._attributions.publish(record, outcome.body)

    def describe(self, record: CallbackRecord, request: HttpRequest) -> dict[str, object]:
        hashed = [
            part.split("=", 1)[1]
            for part in request.url.split("?", 1)[-1].split("&")
            if part.startswith(("hashed_device_id=", "extra_device_ids="))
        ]
        return describe_request(request, record, [*self.client.secrets(record.app), *hashed])
