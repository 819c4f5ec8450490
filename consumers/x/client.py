"""X Ads API calls: requests signed with each app's credentials, and what X's
answers mean.

Shared by the destination (``conversion_event``) and the ``postback-hub x``
commands (``conversion_attribution``, ``app_event_tags``). :class:`XClient` holds
one :class:`~postback_hub.consumers.x.signing.OAuthSigner` per app and signs each
attempt afresh (a new nonce and timestamp). :func:`classify_answer` is pure: X's
statuses become outcomes, and X's error ``code`` becomes part of a reason (which
reaches log lines and metric labels) only when it has the shape of a code; the
answer itself stays in the dead letter's body excerpt, nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from postback_hub.consumers.delivery import (
    Delivered,
    HttpAnswer,
    HttpRequest,
    Outcome,
    Permanent,
    Retry,
    excerpt,
    retry_after_seconds,
    send_http,
)
from postback_hub.consumers.x.config import XDestination
from postback_hub.consumers.x.mapping import REPEATED_STRINGS
from postback_hub.consumers.x.signing import OAuthSigner, encode_query

# The statuses X documents as retryable: the conversion was not recorded.
NOT_PROCESSED = frozenset({500, 503})
# What an error code of X's looks like ("UNAUTHORIZED_ACCESS", 88). Anything else is
# text a partner chose, possibly an echo of the request (a device IP): never a label.
ERROR_CODE_SHAPE = re.compile(r"[A-Za-z0-9_]{1,40}")
UNRECOGNISED_CODE = "unrecognised_code"


@dataclass(slots=True)
class XRequest(HttpRequest):
    """A request to X: ``app`` names whose credentials sign it, ``query`` is the URL's
    query decoded (so signing need not parse it back). Signed when sent, not before."""

    app: str = ""
    query: tuple[tuple[str, str], ...] = ()


def as_x_request(request: HttpRequest) -> XRequest:
    """The runtime hands back what ``prepare`` made; anything else is a programming error."""
    if not isinstance(request, XRequest):
        raise TypeError(f"not a request the X destination prepared: {type(request).__name__}")
    return request


class XClient:
    """Signed requests to X's Ads API for the apps of one destination."""

    def __init__(self, config: XDestination) -> None:
        self.config = config
        self._signers: dict[str, OAuthSigner] = {}
        tokens: dict[tuple[str, str], int] = {}
        credential_sets: dict[tuple[str, str, str, str], int] = {}
        self._token_ids: dict[str, int] = {}
        self._credential_ids: dict[str, int] = {}
        for app_key, app in config.apps.items():
            consumer_key, token = app.consumer_key.reveal(), app.access_token.reveal()
            secrets = (app.consumer_secret.reveal(), app.access_token_secret.reveal())
            self._signers[app_key] = OAuthSigner(
                consumer_key,
                secrets[0],
                token,
                secrets[1],
                repeated=(*REPEATED_STRINGS, app.app_id),
            )
            # Opaque numbers, so rate limits can group apps without holding credentials.
            pair = (consumer_key, token)
            self._token_ids[app_key] = tokens.setdefault(pair, len(tokens))
            self._credential_ids[app_key] = credential_sets.setdefault(
                (*pair, *secrets), len(credential_sets)
            )

    @property
    def token_ids(self) -> Mapping[str, int]:
        """App -> which access token it signs with (X counts requests per token)."""
        return self._token_ids

    @property
    def credential_ids(self) -> Mapping[str, int]:
        """App -> which set of all four credentials it signs with (a 401 refuses a set)."""
        return self._credential_ids

    def endpoint(self, base_url: str, resource: str) -> str:
        return f"{base_url.rstrip('/')}/{self.config.api_version}/{resource}"

    def request(
        self, app: str, method: str, base_url: str, resource: str, params: Mapping[str, str]
    ) -> XRequest:
        """An unsigned request; its query is encoded as the signature encodes it."""
        query = encode_query(params, self._signers[app].encode)
        url = f"{self.endpoint(base_url, resource)}?{query}"
        return XRequest(method, url, app=app, query=tuple(params.items()))

    def sign(
        self, app: str, method: str, url: str, query: Sequence[tuple[str, str]] | None = None
    ) -> dict[str, str]:
        """OAuth 1.0a headers for this exact URL (every query parameter is signed)."""
        return self._signers[app].headers(method, url, query or None)

    def signer(self, app: str) -> OAuthSigner:
        return self._signers[app]

    def secrets(self, app: str) -> tuple[str, ...]:
        """The app's two secrets, for masking (empty for an unknown app)."""
        signer = self._signers.get(app)
        return () if signer is None else (signer.client_secret, signer.resource_owner_secret)

    async def send(self, session: aiohttp.ClientSession, request: XRequest) -> HttpAnswer | Retry:
        """Sign and send one attempt; network trouble is a Retry (see ``send_http``)."""
        headers = self.sign(request.app, request.method, request.url, request.query)
        signed = HttpRequest(request.method, request.url, headers, request.body)
        return await send_http(session, signed, self.config.request_timeout_s)

    async def get_json(self, session: aiohttp.ClientSession, app: str, url: str) -> tuple[int, Any]:
        """A signed GET (the support commands): the status and the JSON answer."""
        headers = self.sign(app, "GET", url)
        async with session.get(URL(url, encoded=True), headers=headers) as response:
            return response.status, await response.json(content_type=None)


def error_code(body: bytes) -> object:
    """The ``code`` of X's first error as X sent it (any JSON value); None without one."""
    try:
        errors = orjson.loads(body).get("errors") or []
        return errors[0].get("code") if errors else None
    except (orjson.JSONDecodeError, AttributeError, IndexError, TypeError):
        return None


def reason(status: int, body: bytes) -> str:
    """``http_<status>``, with X's error code when it has the shape of one (a number,
    or a word of :data:`ERROR_CODE_SHAPE`); a code of any other shape or type becomes
    :data:`UNRECOGNISED_CODE`. The answer's text stays in the excerpt."""
    code = error_code(body)
    if code is None:
        return f"http_{status}"
    if isinstance(code, int) and not isinstance(code, bool):  # true is no code of X's
        code = str(code)
    if isinstance(code, str) and ERROR_CODE_SHAPE.fullmatch(code):
        return f"http_{status}_{code}"
    return f"http_{status}_{UNRECOGNISED_CODE}"


def classify_answer(answer: HttpAnswer, reset_in: float | None) -> Outcome:
    """What X's answer to ``conversion_event`` means; ``reset_in`` is what the rate gate
    learnt from it (seconds until the reset when blocked)."""
    status, body = answer.status, answer.body
    if 200 <= status < 300:
        return Delivered(status, body)
    why = reason(status, body)
    if status == 429:
        if not reset_in:
            # No usable reset (absent, or already past): Retry-After, if X sent one.
            reset_in = retry_after_seconds(answer.headers.get("Retry-After")) or reset_in
        return Retry(why, 429, reset_in, excerpt(body))
    if status in NOT_PROCESSED:
        return Retry(why, status, None, excerpt(body))
    if status >= 500 or status == 408:
        # X names only 500 and 503 as safe to retry; a gateway's 502 or 504, or a 408,
        # may come after X recorded the conversion: the never-twice policy decides.
        return Retry(why, status, None, excerpt(body), ambiguous=True)
    return Permanent(why, status, excerpt(body))
