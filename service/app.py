"""The receiver's aiohttp application: routes, middleware and long-lived resources.

Handlers stay thin: read the request within bounds, call :func:`intake`, produce,
answer. A 200 is sent only after the broker's ``acks=all``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiohttp.http_exceptions
import orjson
from aiohttp import web

from postback_hub.service.auth import client_address, forwarded_chain
from postback_hub.service.errors import BadRequest, IntakeError, NotFound, PayloadTooLarge
from postback_hub.service.fields import CANONICAL_FIELDS
from postback_hub.service.intake import RawCallback, intake
from postback_hub.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from postback_hub.service.metrics import ReceiverMetrics
from postback_hub.service.producer import BrokerUnavailable, CallbackProducer, RecordTooLarge
from postback_hub.service.record_privacy import PrivacyStep, privacy_step
from postback_hub.service.rejections import RejectionNotes, facts_from_query, note_of
from postback_hub.service.settings import AppSettings, Settings

log = logging.getLogger("postback_hub.receiver")

CALLBACK_ROUTE = "/v1/adjust/{app}"


@dataclass
class Lifecycle:
    """Process-level state the handlers read: set to draining on SIGTERM."""

    draining: bool = False
    # When the shutdown must be over (event loop time); set on SIGTERM.
    stop_by: float | None = None


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", ReceiverMetrics)
PRODUCER = web.AppKey("producer", CallbackProducer)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
REJECTIONS = web.AppKey("rejections", RejectionNotes)
# Resolved once: settings lookups through pydantic's private attributes are slow per request.
SECRETS = web.AppKey("secrets", dict[str, list[str]])
# Apps whose privacy options change records, with their steps (absent: nothing to do).
PRIVACY = web.AppKey("privacy", dict[str, PrivacyStep])


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def error_response(exc: IntakeError) -> web.Response:
    return json_response(exc.status, exc.body())


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every answer is JSON, including the framework's own 404/405/413."""
    try:
        return await handler(request)
    except IntakeError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        # Keep what the framework says beyond the body, e.g. Allow on a 405 (RFC 9110).
        kept = {
            name: value
            for name, value in exc.headers.items()
            if name.lower() not in ("content-type", "content-length")
        }
        return json_response(
            exc.status, {"error": {"code": code, "field": None, "message": exc.reason}}, kept
        )
    except Exception:
        log.exception("unexpected error while handling a request")
        return json_response(
            500,
            {"error": {"code": "internal_error", "field": None, "message": "internal error"}},
        )


class SlowBody(Exception):
    """The body did not arrive within ``body_timeout_s``: a 503 (the network may be at
    fault, and Adjust drops anything answered 4xx), not a 408."""


async def _read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge("payload_too_large", f"the body exceeds {max_bytes} bytes", None)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        "payload_too_large", f"the body exceeds {max_bytes} bytes", None
                    )
                chunks.append(chunk)
    except (web.HTTPException, IntakeError):
        raise
    except TimeoutError:
        raise SlowBody() from None
    except (web.RequestPayloadError, aiohttp.http_exceptions.HttpProcessingError):
        raise BadRequest("invalid_body", "the body could not be read as sent", None) from None
    except (ConnectionResetError, asyncio.IncompleteReadError):
        raise BadRequest("incomplete_body", "the client went away mid-body", None) from None
    return b"".join(chunks)


_LOGGABLE_FIELDS = CANONICAL_FIELDS | {"app", "secret", "Content-Type"}


def _log_field(field: str | None) -> str | None:
    """A caller's own key could be anything (even a device id): only known names are logged."""
    if field is None or field in _LOGGABLE_FIELDS:
        return field
    return "(custom key)"


async def receive_callback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    app_key = request.match_info["app"]
    app = settings.apps.get(app_key)
    app_label = app_key if app is not None else "unknown"
    kind: str | None = None
    status = 500
    metrics.inflight.inc()
    try:
        if app is None:
            raise NotFound("unknown_app", "no app is configured under this key", "app")
        response, kind = await _receive(request, settings, app_key, app)
        status = response.status
        return response
    except IntakeError as exc:
        status = exc.status
        log.info(
            "callback rejected",
            extra={
                "app": app_label,
                "status": exc.status,
                "code": exc.code,
                "field": _log_field(exc.field),
            },
        )
        if app is not None:
            _note_rejection(request, app_key, exc)
        return error_response(exc)
    except SlowBody:
        status = 503
        response = json_response(
            503,
            {
                "error": {
                    "code": "request_timeout",
                    "field": None,
                    "message": "the body did not arrive in time; retry",
                }
            },
            {"Retry-After": str(settings.receiver.retry_after_s)},
        )
        response.force_close()
        return response
    finally:
        metrics.inflight.dec()
        metrics.answered(app_label, kind, status)


def _note_rejection(request: web.Request, app_key: str, exc: IntakeError) -> None:
    """Tell reconciliation that Adjust will drop this one (fire-and-forget; refusals only)."""
    kind, created_s = facts_from_query(request.rel_url.raw_query_string)
    at_s = created_s if created_s is not None else time.time()
    note = note_of(app_key, kind, exc.code, exc.status, at_s)
    request.app[REJECTIONS].send(request.app[PRODUCER].client, note)


async def _receive(
    request: web.Request, settings: Settings, app_key: str, app: AppSettings
) -> tuple[web.Response, str]:
    """Read, check, normalise and produce one callback: the answer and the activity kind."""
    receiver = settings.receiver
    raw = RawCallback(
        raw_query=request.rel_url.raw_query_string.encode("latin-1", "replace"),
        content_type=request.headers.get("Content-Type", ""),
        body=await _read_body(request, receiver.max_request_bytes, receiver.body_timeout_s)
        if request.method == "POST"
        else b"",
        authorization=request.headers.get("Authorization"),
        # Only parsed when an allowlist needs it: most deployments rely on the secret.
        client=client_address(
            request.remote,
            forwarded_chain(request.headers.getall("X-Forwarded-For", ())),
            receiver.trusted_proxies,
        )
        if app.allow_cidrs
        else None,
        received_at_millis=time.time_ns() // 1_000_000,
    )
    record = intake(
        app_key,
        app,
        request.app[SECRETS][app_key],
        raw,
        receiver.max_request_bytes,
        request.app[PRIVACY].get(app_key),
    )
    value = record.to_json()
    if len(value) > settings.kafka.max_record_bytes:
        raise PayloadTooLarge(
            "record_too_large",
            f"the normalised record exceeds {settings.kafka.max_record_bytes} bytes",
            None,
        )
    try:
        ack = await request.app[PRODUCER].produce(record.partition_key, value)
    except RecordTooLarge:
        raise PayloadTooLarge(
            "record_too_large", "the broker refuses a record of this size", None
        ) from None
    except BrokerUnavailable as exc:
        answer = json_response(
            503,
            {"error": {"code": "kafka_unavailable", "field": None, "message": str(exc)}},
            {"Retry-After": str(receiver.retry_after_s)},
        )
    else:
        answer = json_response(
            200,
            {
                "status": "queued",
                "fingerprint": record.fingerprint,
                "partition": ack.partition,
                "offset": ack.offset,
            },
        )
        log.debug(
            "callback queued",
            extra={"app": app_key, "kind": record.activity_kind, "fingerprint": record.fingerprint},
        )
    return answer, record.activity_kind


async def healthz(request: web.Request) -> web.Response:
    return json_response(200, {"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    draining = request.app[LIFECYCLE].draining
    kafka_ok = await request.app[PRODUCER].ready()
    ready = kafka_ok and not draining
    return json_response(
        200 if ready else 503, {"ready": ready, "kafka": kafka_ok, "draining": draining}
    )


OPENAPI = (Path(__file__).parent / "openapi.json").read_bytes()


async def openapi(_request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI, content_type="application/json")


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )


def create_app(settings: Settings, metrics: ReceiverMetrics | None = None) -> web.Application:
    """The receiver application; the producer opens and closes with it."""
    # The body limit is enforced by _read_body with a JSON error; leave aiohttp's above it.
    app = web.Application(
        middlewares=[errors_as_json], client_max_size=settings.receiver.max_request_bytes + 1
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics or ReceiverMetrics()
    app[LIFECYCLE] = Lifecycle()
    app[REJECTIONS] = RejectionNotes(settings)
    app[SECRETS] = {key: settings.app_secrets(key) for key in settings.apps}
    app[PRIVACY] = {
        key: step
        for key, options in settings.apps.items()
        if (step := privacy_step(options.privacy)) is not None
    }

    async def producer_ctx(app: web.Application) -> AsyncIterator[None]:
        producer = CallbackProducer(settings, app[METRICS])
        app[PRODUCER] = producer
        producer.start()
        yield
        app[METRICS].fold()  # the last counts of a worker that stops
        await app[REJECTIONS].close()
        stop_by = app[LIFECYCLE].stop_by
        loop = asyncio.get_running_loop()
        budget = settings.receiver.shutdown_timeout_s if stop_by is None else stop_by - loop.time()
        try:
            # With Kafka down a flush would wait forever; what is still buffered now was
            # answered 503 (never acknowledged), so giving up on it loses nothing.
            async with asyncio.timeout(max(budget, 0.5)):
                await producer.close()
        except TimeoutError:
            log.warning("kafka producer not flushed before the shutdown timeout; closed anyway")

    app.cleanup_ctx.append(producer_ctx)
    app.router.add_route("GET", CALLBACK_ROUTE, receive_callback)
    app.router.add_route("POST", CALLBACK_ROUTE, receive_callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", openapi)
    return app
