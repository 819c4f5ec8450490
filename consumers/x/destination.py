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
import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, get_args

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
    CLICK_WINDOWS,
    VIEW_THROUGH_WINDOWS,
    ConversionType,
    XApp,
    XDestination,
)
from postback_hub.consumers.x.signing import OAuthSigner, encode_query
from postback_hub.service.record import CallbackRecord
from postback_hub.service.settings import ConfigError

REATTRIBUTION_KINDS = frozenset({"reattribution", "reinstall", "reattribution_reinstall"})
CONVERSION_TYPES: tuple[str, ...] = get_args(ConversionType)
ATTRIBUTION_RETENTION_MS = 90 * 86_400_000  # X: attribution data may be kept 90 days


# ------------------------------------------------------------------ pure parts


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
    windows: dict[str, tuple[int, int]],
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
    click, view = windows.get(kind, (14, 1))
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


def checked_windows(click: object, view: object) -> tuple[int, int]:
    """(click_window, view_through_window) as X accepts them, or ValueError saying why not."""
    if isinstance(click, bool) or not isinstance(click, int) or click not in CLICK_WINDOWS:
        raise ValueError(f"click window {click!r} is not one of {CLICK_WINDOWS}")
    if isinstance(view, bool) or not isinstance(view, int) or view not in VIEW_THROUGH_WINDOWS:
        raise ValueError(f"view-through window {view!r} is not one of {VIEW_THROUGH_WINDOWS}")
    if click < view:
        raise ValueError(f"the click window ({click}) must be >= the view-through window ({view})")
    return click, view


def app_windows(app: XApp, *, synced: bool = True) -> dict[str, tuple[int, int]]:
    """Windows per conversion type: configuration, overridden by synced event tags
    unless ``synced`` is False.

    A synced file X would refuse (a window it does not allow, click below view-through)
    stops the start with a configuration error: sent, every conversion of that type
    would be refused and dead-lettered."""
    windows: dict[str, tuple[int, int]] = {kind: w.resolved() for kind, w in app.windows.items()}
    if synced and app.event_tags_file is not None and app.event_tags_file.exists():
        path = app.event_tags_file
        try:
            document = json.loads(path.read_text())
            pairs = document["windows"].items()
        except (ValueError, KeyError, TypeError, AttributeError):
            unreadable = f"{path}: not an event-tags file written by `x event-tags sync`"
            raise ConfigError([unreadable]) from None
        problems = []
        for kind, pair in pairs:
            if kind not in CONVERSION_TYPES:
                problems.append(f"{path}: {kind!r} is not an X conversion type")
                continue
            click, view = pair if isinstance(pair, list) and len(pair) == 2 else (None, None)
            try:
                windows[kind] = checked_windows(click, view)
            except ValueError as exc:
                problems.append(f"{path}: {kind}: {exc}")
        if problems:
            raise ConfigError(problems)
    return windows


# What every conversion_event repeats besides the OAuth protocol's strings.
_REPEATED = (
    *QUERY_NAMES,
    "IOS",
    "ANDROID",
    *CONVERSION_TYPES,
    *(str(days) for days in sorted({*CLICK_WINDOWS, *VIEW_THROUGH_WINDOWS})),
)


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
                    repeated=(*_REPEATED, app.app_id),
                ),
                decode_key(app.hmac_key.reveal()),
                development,
            )
            self._windows[app_key] = app_windows(app, synced=adopt_event_tags)
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
