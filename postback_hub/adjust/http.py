"""One careful HTTP client for Adjust's APIs: App Automation, Report Service, KPI Service.

:class:`AdjustHttp` sends one logical request and keeps these promises, whichever
API it talks to:

- **Credentials stay put.** They are headers given at construction (or per
  request). A redirect is never followed (``allow_redirects=False``): it becomes
  :class:`RedirectRefused`, naming the target host only. Every message this module
  produces (errors, log lines) passes through :func:`scrub` with every credential
  it knows, and exceptions from aiohttp, whose ``request_info`` holds the headers,
  are never chained.
- **Bounded waits.** Each attempt has a total timeout; a :class:`Pacer` spaces
  request starts (Adjust limits per source IP, shared behind a NAT).
- **Retries where they are safe.** 429 and 5xx are retried with jittered
  exponential backoff; a ``Retry-After`` (seconds or an HTTP date) is honoured as
  the least wait, and one longer than ``RetryPolicy.retry_after_cap_s`` ends the
  request with a message saying when to try again. A timeout or a broken
  connection is retried only for idempotent requests (GET, HEAD): a POST may
  have been processed.
- **One-line errors.** Any other non-2xx answer becomes :class:`AdjustHttpError`
  whose message comes from the caller's ``explain`` (what the status means for
  that API and what to do), with at most a short, sanitised excerpt of the body:
  text Adjust sends back is untrusted.

The pure parts (:func:`parse_retry_after`, :func:`retry_delay`, :func:`scrub`,
:func:`excerpt`) are tested without I/O; ``sleep``, ``rng`` and the pacer's clock
are injectable so tests can see every wait without measuring time.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

log = logging.getLogger("postback_hub.adjust.http")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
MASK = "***"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry 429, 5xx and (idempotent) lost answers.

    ``attempts`` counts every try, the first included. The n-th retry waits a
    random time in ``[d/2, d]`` with ``d = min(backoff_max_s, backoff_initial_s *
    2**n)``, or ``Retry-After`` plus up to 10 % when the answer carries one and it
    is longer.
    """

    attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_cap_s: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")


class AdjustHttpError(Exception):
    """A request that did not succeed, as one line saying what to do; never a credential.

    ``status`` is the HTTP status when there was an answer. ``repr`` shows the
    message only (no request details, no headers).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __str__(self) -> str:
        return self.message


class RedirectRefused(AdjustHttpError):
    """The server answered 3xx; following it would carry the credentials elsewhere."""


class RetriesExhausted(AdjustHttpError):
    """Still 429/5xx (or no answer) after every attempt, or asked to wait too long."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2xx answer (or one of the statuses a caller accepts), body read in full."""

    method: str
    path: str
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; an :class:`AdjustHttpError` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise AdjustHttpError(
                f"{self.method} {self.path}: the answer ({self.status}) is not JSON"
            ) from None


# (answer, scrubbed body excerpt) -> one line saying what it means and what to do.
Explain = Callable[[Answer, str], str]


def default_explain(answer: Answer, body: str) -> str:
    reason = {
        400: "the request was refused as invalid",
        401: "the token is invalid or was reset; put the current one in the configuration",
        403: "this user may not do this; ask the account's admin for access",
        404: "not found; check the token or id in the request",
    }.get(answer.status, "the request failed")
    detail = f" (Adjust says: {body})" if body else ""
    return f"{answer.method} {answer.path}: {answer.status}, {reason}{detail}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret replaced by ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def excerpt(body: bytes, secrets: Iterable[str], limit: int = 160) -> str:
    """A short, printable, single-line, credential-free excerpt of an untrusted body.

    A JSON body's ``error``/``message``/``detail`` string is preferred when there is one.
    """
    text = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("error", "message", "detail", "errors"):
            value = parsed.get(key)
            if isinstance(value, str | list | dict) and value:
                text = value if isinstance(value, str) else json.dumps(value)
                break
    text = " ".join(_UNPRINTABLE.sub(" ", scrub(text, secrets)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date).

    None when absent or unreadable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    retry: int, retry_after_s: float | None, policy: RetryPolicy, rng: random.Random
) -> float:
    """The wait before retry number ``retry`` (0 for the first retry)."""
    ceiling = min(policy.backoff_max_s, policy.backoff_initial_s * 2**retry)
    backoff = rng.uniform(ceiling / 2, ceiling)
    if retry_after_s is not None and retry_after_s >= backoff:
        # Jitter on top, never below what the server asked: many clients share a NAT.
        return retry_after_s + rng.uniform(0, retry_after_s * 0.1)
    return backoff


class Pacer:
    """At most ``rate_per_s`` request starts per second, evenly spaced (shared by tasks)."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        self._interval = 1.0 / rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    async def wait(self) -> None:
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self._interval
        if start > now:
            await self._sleep(start - now)


@dataclass
class AdjustHttp:
    """Requests to one Adjust API under ``base_url`` (``https://host/prefix``).

    ``credentials`` are sent on every request and, with ``secrets``, scrubbed from
    every message. ``service`` names the API in messages ("Adjust App Automation
    API"). ``accept`` on :meth:`request` lists non-2xx statuses returned instead of
    raised (a lookup's 404, say).
    """

    session: aiohttp.ClientSession
    base_url: str
    credentials: Mapping[str, str]
    service: str = "Adjust"
    secrets: Collection[str] = ()
    timeout_s: float = 30.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    pacer: Pacer | None = None
    explain: Explain = default_explain
    max_body_bytes: int = 64 * 1024 * 1024
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def _secrets(self, extra: Mapping[str, str] | None) -> list[str]:
        values = [*self.credentials.values(), *self.secrets, *(extra or {}).values()]
        # "Token abc" is scrubbed as a whole and as "abc" alone.
        return values + [v.split(" ", 1)[1] for v in values if " " in v]

    def url(self, path: str) -> URL:
        return URL(self.base_url.rstrip("/") + path)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        accept: Collection[int] = (),
    ) -> Answer:
        """Send, retrying what is safe to retry; the answer or an :class:`AdjustHttpError`."""
        secrets = self._secrets(headers)
        try:
            return await self._request(method, path, params, json_body, headers, accept, secrets)
        except AdjustHttpError as exc:
            # Belt and braces: whatever built the message, no credential leaves.
            clean = scrub(exc.message, secrets)
            if clean != exc.message:
                raise type(exc)(clean, status=exc.status) from None
            raise

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        extra_headers: Mapping[str, str] | None,
        accept: Collection[int],
        secrets: list[str],
    ) -> Answer:
        send_headers: CIMultiDict[str] = CIMultiDict(self.credentials)
        send_headers.update(extra_headers or {})
        data: bytes | None = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            send_headers["Content-Type"] = "application/json"
        send_headers.setdefault("Accept", "application/json")
        url = self.url(path)
        what = f"{method} {path}"
        idempotent = method.upper() in _IDEMPOTENT
        last = ""
        for attempt in range(self.policy.attempts):
            if self.pacer is not None:
                await self.pacer.wait()
            retry_after: float | None = None
            try:
                answer = await self._once(method, path, params, data, send_headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not idempotent:
                    raise AdjustHttpError(
                        f"{self.service}: no answer to {what} ({_failure(exc, self.timeout_s)});"
                        " it may have been processed: check before repeating it"
                    ) from None
                last = _failure(exc, self.timeout_s)
            else:
                if answer.status in _REDIRECTS:
                    raise RedirectRefused(
                        f"{self.service} answered {what} with a redirect to "
                        f"{_host(answer.headers.get('Location'), url)}; not followed, so the "
                        "credentials stay here. If that host is Adjust's, set the base URL to it",
                        status=answer.status,
                    )
                if 200 <= answer.status < 300 or answer.status in accept:
                    return answer
                if answer.status not in RETRYABLE_STATUSES:
                    body = excerpt(answer.body, secrets)
                    raise AdjustHttpError(self.explain(answer, body), status=answer.status)
                retry_after = parse_retry_after(answer.headers.get("Retry-After"), self.clock())
                last = f"{answer.status}"
                if retry_after is not None and retry_after > self.policy.retry_after_cap_s:
                    raise RetriesExhausted(
                        f"{self.service} answered {what} with {answer.status} and asks to wait "
                        f"{retry_after:.0f}s; try again later",
                        status=answer.status,
                    )
            if attempt + 1 == self.policy.attempts:
                break
            delay = retry_delay(attempt, retry_after, self.policy, self.rng)
            log.warning(
                "%s: %s got %s; retry %d of %d in %.1fs",
                self.service,
                what,
                scrub(last, secrets),
                attempt + 1,
                self.policy.attempts - 1,
                delay,
            )
            await self.sleep(delay)
        raise RetriesExhausted(
            f"{self.service}: {what} still failing ({last}) after {self.policy.attempts} "
            "attempts; try again later"
        )

    async def _once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        data: bytes | None,
        headers: CIMultiDict[str],
    ) -> Answer:
        async with self.session.request(
            method,
            self.url(path),
            params=params,
            data=data,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        ) as response:
            body = bytearray()
            async for chunk in response.content.iter_chunked(65_536):
                body += chunk
                if len(body) > self.max_body_bytes:
                    raise AdjustHttpError(
                        f"{self.service}: the answer to {method} {path} is larger than "
                        f"{self.max_body_bytes} bytes; narrow the request"
                    )
            return Answer(method.upper(), path, response.status, response.headers, bytes(body))


def _failure(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g}s"
    # The class name only: aiohttp's messages and request_info can hold the URL and headers.
    return f"connection failed: {type(exc).__name__}"


def _host(location: str | None, base: URL) -> str:
    """The host a redirect points at (never its path or query, which may hold anything)."""
    if not location:
        return "an unnamed location"
    try:
        target = base.join(URL(location))
    except ValueError:
        return "an unreadable location"
    host = target.host or "an unnamed host"
    return " ".join(_UNPRINTABLE.sub(" ", host).split())[:100]
