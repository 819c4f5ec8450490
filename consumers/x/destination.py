"""X's mobile app conversion API (MACT): ``POST /{version}/conversion_event``.

Mapping and hashing are pure functions; the destination object signs each
attempt (OAuth 1.0a HMAC-SHA1 by oauthlib, a fresh nonce per attempt), honours
X's rate-limit headers, and publishes X's attribution decision to Kafka.

X documents no de-duplication, so the runtime writes an intent mark before each
request and, by default, dead-letters instead of retrying when a request may
have been processed (``on_ambiguous = "dead_letter"``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from postback_hub.consumers.delivery import (
    Delivered,
    HttpRequest,
    Outcome,
    Permanent,
    Retry,
    Skip,
    excerpt,
    retry_after_seconds,
    send_http,
)
from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.consumers.redact import describe_request
from postback_hub.consumers.x.config import (
    XDestination,
)
from postback_hub.consumers.x.mapping import (
    REPEATED_STRINGS,
    app_windows,
    conversion_params,
    decode_key,
)
from postback_hub.consumers.x.signing import OAuthSigner, encode_query
from postback_hub.consumers.x.tags import read_windows
from postback_hub.service.record import CallbackRecord

ATTRIBUTION_RETENTION_MS = 90 * 86_400_000  # X: attribution data may be kept 90 days


# ------------------------------------------------------------------ rate limits


class RateGate:
    """X's limits are announced per response; treat them as the truth.

    After a 429, or with no requests remaining, nothing goes out before
    ``x-rate-limit-reset``; when few remain, requests are spread over the time
    left in the window.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._blocked_until = 0.0
        self._interval = 0.0
        self._next_slot = 0.0

    def delay(self) -> float:
        now = self._clock()
        return max(0.0, self._blocked_until - now, self._next_slot - now)

    async def wait(self) -> None:
        # Sleeping to a known deadline; a later response may move it, hence the loop.
        while (delay := self.delay()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)
        if self._interval:
            self._next_slot = max(self._clock(), self._next_slot) + self._interval

    def observe(self, status: int, headers: Mapping[str, str]) -> float | None:
        """Learn from a response; returns seconds until the reset when blocked."""
        reset = _header_number(headers, "x-rate-limit-reset")
        if reset is None:
            return None
        remaining = _header_number(headers, "x-rate-limit-remaining")
        limit = _header_number(headers, "x-rate-limit-limit")
        now = self._clock()
        # X's windows last 15 minutes: a reset far beyond is not one, and believing it
        # would hold back every app of the token until its conversions expire.
        reset = min(reset, now + MAX_RESET_AHEAD_S)
        if status == 429 or (remaining is not None and remaining <= 0):
            self._blocked_until = max(self._blocked_until, reset)
            self._interval = 0.0
            return max(0.0, reset - now)
        if remaining is None or limit is None:
            self._interval = 0.0
            return None
        # Spread the last tenth of the budget over what is left of the window.
        self._interval = (reset - now) / remaining if remaining < max(1, limit // 10) else 0.0
        return None


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = float(headers.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------ the destination


@dataclass(frozen=True, slots=True)
class _Credentials:
    signer: OAuthSigner
    key: bytes
    development_key: bytes | None


class XConversions:
    """A destination of ``type = "x"``."""

    def __init__(
        self, name: str, config: XDestination, source_topic: str, *, adopt_event_tags: bool = True
    ) -> None:
        """``adopt_event_tags=False`` (the support commands) leaves synced tags files
        unread, so a bad one can still be replaced by ``x event-tags sync``."""
        self.name = name
        self.config = config
        self._source_topic = source_topic
        self._credentials: dict[str, _Credentials] = {}
        self._windows: dict[str, dict[str, tuple[int, int]]] = {}
        for app_key, app in config.apps.items():
            development = (
                decode_key(app.hmac_key_development.reveal())
                if app.hmac_key_development is not None
                else None
            )
            self._credentials[app_key] = _Credentials(
                OAuthSigner(
                    app.consumer_key.reveal(),
                    app.consumer_secret.reveal(),
                    app.access_token.reveal(),
                    app.access_token_secret.reveal(),
                    repeated=(*REPEATED_STRINGS, app.app_id),
                ),
                decode_key(app.hmac_key.reveal()),
                development,
            )
            synced = (
                read_windows(app.event_tags_file)
                if adopt_event_tags and app.event_tags_file is not None
                else None
            )
            self._windows[app_key] = app_windows(app, synced)
        # X counts requests per access token: apps that share an advertiser's token share
        # its gate. A 401 refuses the credentials (all four of them), so it holds back
        # every app signing with exactly those; a 403 may concern one app, so only it.
        gates: dict[tuple[str, str], RateGate] = {}
        credential_sets: dict[tuple[str, str, str, str], int] = {}
        self._gates: dict[str, RateGate] = {}
        self._credentials_id: dict[str, int] = {}
        for app_key, credentials in self._credentials.items():
            signer = credentials.signer
            token = (signer.client_key, signer.resource_owner_key)
            self._gates[app_key] = gates.setdefault(token, RateGate())
            all_four = (*token, signer.client_secret, signer.resource_owner_secret)
            self._credentials_id[app_key] = credential_sets.setdefault(
                all_four, len(credential_sets)
            )
        self._refused_until: dict[int, float] = {}  # by credentials, after a 401
        self._forbidden_until: dict[str, float] = {}  # by app, after a 403
        self._producer: AIOKafkaProducer | None = None
        self._metrics: ConsumerMetrics | None = None

    @property
    def attribution_topic(self) -> str:
        return f"{self._source_topic}.{self.name}.attributions"

    def extra_topics(self) -> dict[str, dict[str, str]]:
        return {self.attribution_topic: {"retention.ms": str(ATTRIBUTION_RETENTION_MS)}}

    def attach(self, producer: AIOKafkaProducer, metrics: ConsumerMetrics) -> None:
        self._producer = producer
        self._metrics = metrics

    def endpoint(self, base_url: str, resource: str) -> str:
        return f"{base_url.rstrip('/')}/{self.config.api_version}/{resource}"

    def prepare(self, record: CallbackRecord) -> HttpRequest | Skip:
        app = self.config.apps.get(record.app)
        if app is None:
            return Skip("app_not_activated")
        credentials = self._credentials[record.app]
        base_url, key = self.config.base_url, credentials.key
        if record.environment == "sandbox":
            if app.sandbox_base_url is None or credentials.development_key is None:
                return Skip("sandbox_without_sandbox_endpoint")
            base_url, key = app.sandbox_base_url, credentials.development_key
        params = conversion_params(record, app, key, self._windows[record.app])
        if isinstance(params, Skip):
            return params
        url = self.endpoint(base_url, "conversion_event") + "?" + encode_query(params)
        return HttpRequest(
            "POST", url, params=None, tag=record.app, query_pairs=tuple(params.items())
        )

    def send_delay(self, request: HttpRequest) -> float:
        gate = self._gates.get(request.tag)
        return 0.0 if gate is None else gate.delay()

    def sign(
        self,
        app_key: str,
        method: str,
        url: str,
        query: Sequence[tuple[str, str]] | None = None,
    ) -> dict[str, str]:
        """OAuth 1.0a headers for this exact URL (every query parameter is signed)."""
        return self._credentials[app_key].signer.headers(method, url, query)

    async def send(self, session: aiohttp.ClientSession, request: HttpRequest) -> Outcome:
        app_key = request.tag
        blocked_until = max(
            self._refused_until.get(self._credentials_id[app_key], 0.0),
            self._forbidden_until.get(app_key, 0.0),
        )
        if time.monotonic() < blocked_until:
            # X refused these credentials a moment ago: no retry storm.
            return Permanent("unauthorized_cooldown")
        gate = self._gates[app_key]
        await gate.wait()
        headers = self.sign(app_key, "POST", request.url, request.query_pairs or None)
        signed = HttpRequest(request.method, request.url, headers)
        answer = await send_http(session, signed, self.config.request_timeout_s)
        if isinstance(answer, Retry):
            return answer
        reset_in = gate.observe(answer.status, answer.headers)
        if answer.status == 429 and not reset_in:
            # No usable reset (absent, or already past): Retry-After, if X sent one.
            reset_in = retry_after_seconds(answer.headers.get("Retry-After")) or reset_in
        if 200 <= answer.status < 300:
            return Delivered(answer.status, answer.body)
        code = _error_code(answer.body)
        reason = f"http_{answer.status}" + (f"_{code}" if code else "")
        if answer.status == 429:
            return Retry(reason, 429, reset_in, excerpt(answer.body))
        if answer.status in _NOT_PROCESSED:
            return Retry(reason, answer.status, None, excerpt(answer.body))
        if answer.status >= 500 or answer.status == 408:
            # X names only 500 and 503 as safe to retry; a gateway's 502 or 504, or a 408,
            # may come after X recorded the conversion: the never-twice policy decides.
            return Retry(reason, answer.status, None, excerpt(answer.body), ambiguous=True)
        if answer.status == 401:
            self._refused_until[self._credentials_id[app_key]] = (
                time.monotonic() + self.config.auth_failure_cooldown_s
            )
        elif answer.status == 403:
            self._forbidden_until[app_key] = time.monotonic() + self.config.auth_failure_cooldown_s
        return Permanent(reason, answer.status, excerpt(answer.body))

    async def after_delivery(
        self, record: CallbackRecord, request: HttpRequest, outcome: Delivered
    ) -> asyncio.Future[Any] | None:
        """Publish X's attribution decision; the message settles once it is stored."""
        try:
            data = orjson.loads(outcome.body).get("data") or {}
        except (orjson.JSONDecodeError, AttributeError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        attribution = data.get("twitter_attribution")
        # X always includes the node, null when X does not claim the conversion; without
        # it the answer says nothing either way.
        attributed = (attribution is not None) if "twitter_attribution" in data else None
        if self._metrics is not None:
            self._metrics.attribution(attributed)
        if self._producer is None:
            return None
        value = orjson.dumps(
            {
                "fingerprint": record.fingerprint,
                "app": record.app,
                "activity_kind": record.activity_kind,
                "conversion_type": data.get("conversion_type"),
                "conversion_time": data.get("conversion_time", record.created_at),
                "attributed": attributed,
                "twitter_attribution": attribution,
                "tpn_attribution": data.get("tpn_attribution"),
                "recorded_at_ms": time.time_ns() // 1_000_000,
            }
        )
        future: asyncio.Future[Any] = await self._producer.send(
            self.attribution_topic, value=value, key=record.fingerprint.encode()
        )
        return future

    def describe(self, record: CallbackRecord, request: HttpRequest) -> dict[str, object]:
        credentials = self._credentials.get(record.app)
        secrets: list[str] = []
        if credentials is not None:
            signer = credentials.signer
            secrets = [signer.client_secret, signer.resource_owner_secret]
        hashed = [
            part.split("=", 1)[1]
            for part in request.url.split("?", 1)[-1].split("&")
            if part.startswith(("hashed_device_id=", "extra_device_ids="))
        ]
        return describe_request(request, record, [*secrets, *hashed])


# The furthest ahead an x-rate-limit-reset is believed (X's windows are 15 minutes).
MAX_RESET_AHEAD_S = 3600.0
# The statuses X documents as retryable: the conversion was not recorded.
_NOT_PROCESSED = frozenset({500, 503})


def _error_code(body: bytes) -> str | None:
    try:
        errors = orjson.loads(body).get("errors") or []
        return str(errors[0].get("code")) if errors else None
    except (orjson.JSONDecodeError, AttributeError, IndexError, TypeError):
        return None
