"""What a destination hands the runtime, and what a delivery attempt comes to.

A destination is two things: a pure ``prepare`` (routing and mapping: a record
becomes a :class:`HttpRequest`, a :class:`Skip`, or raises :class:`MappingError`)
and an async ``send`` that classifies the partner's answer as an :class:`Outcome`.
Optional capabilities (:class:`Describes`, :class:`Paced`, :class:`HasTopics`,
:class:`PublishesAfterDelivery`) are protocols of their own. The runtime owns
everything else: order, retries, parking, dead letters, de-duplication, limits
and metrics.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import aiohttp
from aiokafka import AIOKafkaProducer
from yarl import URL

from postback_hub.consumers.metrics import ConsumerMetrics
from postback_hub.service.record import CallbackRecord

BODY_EXCERPT_BYTES = 512


@dataclass(slots=True)
class HttpRequest:
    """One partner request. ``params`` go in the query string, encoded by the client.
    Treated as immutable (not frozen for the same reason as CallbackRecord). A
    destination that needs more on its requests subclasses it (X's ``XRequest``):
    the runtime hands ``send`` the very object ``prepare`` returned."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    params: dict[str, str] | None = None

    @property
    def full_url(self) -> str:
        """The URL as sent, query included (for logs and tests)."""
        if not self.params:
            return self.url
        return str(URL(self.url, encoded=True).update_query(self.params))


@dataclass(frozen=True, slots=True)
class Skip:
    """Routing decided this destination does not get this activity."""

    reason: str


class MappingError(Exception):
    """The record cannot be turned into a valid request: dead-lettered, never retried."""


@dataclass(frozen=True, slots=True)
class Delivered:
    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Retry:
    """Not delivered, worth trying again (network error, timeout, 408, 429, 5xx)."""

    reason: str
    status: int | None = None
    retry_after_s: float | None = None
    body_excerpt: str = ""
    # The request reached the partner and may have been processed (a read timeout).
    ambiguous: bool = False


@dataclass(frozen=True, slots=True)
class Permanent:
    """Will never succeed as sent (4xx other than 408/429): dead-lettered."""

    reason: str
    status: int | None = None
    body_excerpt: str = ""


Outcome = Delivered | Retry | Permanent


class Destination(Protocol):
    """A partner that gets one HTTP request per record: the required surface.

    ``prepare`` is pure (routing and mapping); ``send`` does one attempt and
    classifies the answer. Everything else (order, retries, parking, dead letters,
    de-duplication, limits, metrics, commits) is the runtime's. What only some
    partners need is one of the optional protocols below, which the runtime
    checks for once, when it is built.
    """

    name: str

    def prepare(self, record: CallbackRecord) -> HttpRequest | Skip:
        """Route and map: the request to send, or why this partner does not get it.
        Raises MappingError for a record that can never become a valid request."""
        ...

    async def send(self, session: aiohttp.ClientSession, request: HttpRequest) -> Outcome:
        """One attempt; never raises for network trouble (that is a Retry)."""
        ...


@runtime_checkable
class Describes(Protocol):
    """Says how a request may be logged (dry run) when the generic masking is not
    enough: for example a credential placed in the URL."""

    def describe(self, record: CallbackRecord, request: HttpRequest) -> dict[str, object]:
        """The request as it may be logged: device ids and secrets masked."""
        ...


@runtime_checkable
class Paced(Protocol):
    """Announces its own limits (X's rate-limit headers)."""

    def send_delay(self, request: HttpRequest) -> float:
        """Seconds before the partner may be sent this request."""
        ...


@runtime_checkable
class HasTopics(Protocol):
    """Writes topics of its own besides the runtime's (created at start)."""

    def extra_topics(self) -> dict[str, dict[str, str]]:
        """Topic name -> topic config."""
        ...


@runtime_checkable
class PublishesAfterDelivery(Protocol):
    """Stores something about a delivered activity before it is settled (X's
    attribution decision)."""

    def attach(self, producer: AIOKafkaProducer, metrics: ConsumerMetrics) -> None:
        """Hand over the runtime's producer (acks=all) and metrics, once, at start."""
        ...

    async def after_delivery(
        self, record: CallbackRecord, request: HttpRequest, outcome: Delivered
    ) -> asyncio.Future[Any] | None:
        """Work on a delivered activity that must be durable before it is settled."""
        ...


def excerpt(body: bytes) -> str:
    return body[:BODY_EXCERPT_BYTES].decode("utf-8", "replace")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def classify_http(status: int, headers: Mapping[str, str] | None, body: bytes) -> Outcome:
    """The common contract: 2xx delivered; 408, 429, 5xx retry; other 4xx permanent."""
    if 200 <= status < 300:
        return Delivered(status, body)
    retry_after = retry_after_seconds((headers or {}).get("Retry-After"))
    if status in (408, 429) or status >= 500:
        return Retry(f"http_{status}", status, retry_after, excerpt(body))
    return Permanent(f"http_{status}", status, excerpt(body))


@functools.lru_cache(maxsize=16)
def _timeout(total_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total_s, connect=min(total_s, 5.0))


class HttpAnswer(NamedTuple):
    status: int
    headers: Mapping[str, str]  # case-insensitive as received
    body: bytes


async def send_http(
    session: aiohttp.ClientSession, request: HttpRequest, timeout_s: float
) -> HttpAnswer | Retry:
    """Send one request; network errors and timeouts become :class:`Retry`.

    A timeout or a dropped connection after connecting may mean the partner
    processed the request: such a Retry is ``ambiguous`` so the runtime can apply
    the destination's policy. A failure to connect never is.
    """
    try:
        async with session.request(
            request.method,
            URL(request.url, encoded=True),
            params=request.params,
            headers=request.headers,
            data=request.body,
            timeout=_timeout(timeout_s),
            allow_redirects=False,
        ) as response:
            body = await response.read()
            return HttpAnswer(response.status, response.headers, body)
    except aiohttp.ConnectionTimeoutError:
        return Retry("connect_timeout")
    except aiohttp.ClientConnectorError:
        return Retry("connect_error")
    except TimeoutError:
        return Retry("timeout", ambiguous=True)
    except aiohttp.ClientError as exc:
        return Retry(type(exc).__name__, ambiguous=True)
