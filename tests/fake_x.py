"""A local X Ads API for tests that enforces the documented contract strictly.

- OAuth 1.0a HMAC-SHA1: the signature is verified with oauthlib against the same
  credentials; unknown keys, stale timestamps and replayed nonces are 401.
- conversion_event / conversion_attribution: required parameters, enums, the
  window rules (click >= view-through), formats; X's error JSON otherwise.
- ``+ / =`` must arrive percent-encoded in the query.
- Rate limits: x-rate-limit-* headers on every answer, 429 past the budget.
- Answers attribution JSON shaped like X's documented example.
- ``echo_in_error_code``: a hostile or careless partner whose error code echoes the
  device IP of an otherwise valid request (its text is untrusted).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from oauthlib.common import Request
from oauthlib.oauth1.rfc5849 import signature

from tests.support import serve_locally

CONVERSION_TYPES = frozenset(
    [
        "PURCHASE",
        "SIGN_UP",
        "INSTALL",
        "RE_ENGAGE",
        "UPDATE",
        "TUTORIAL_COMPLETE",
        "RESERVATION",
        "ADD_TO_CART",
        "ADD_TO_WISHLIST",
        "LOGIN",
        "CHECKOUT_INITIATED",
        "SEARCH",
        "LEVEL_ACHIEVED",
        "ACHIEVEMENT_UNLOCKED",
        "CONTENT_VIEW",
        "SHARE",
        "INVITE",
        "ADDED_PAYMENT_INFO",
        "SPENT_CREDITS",
        "RATED",
    ]
)
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@dataclass
class XCredentials:
    consumer_key: str = "ck-test"
    consumer_secret: str = "cs-test"
    access_token: str = "at-test"
    access_token_secret: str = "ats-test"


@dataclass
class Call:
    path: str
    status: int
    params: dict[str, str]
    at: float


@dataclass
class FakeX:
    credentials: XCredentials = field(default_factory=XCredentials)
    apps: dict[str, str] = field(
        default_factory=lambda: {"333903271": "IOS", "com.example.app": "ANDROID"}
    )
    rate_limit: int = 60_000
    window_s: float = 900.0
    # hashed_device_ids X attributes to a campaign; others get twitter_attribution: null
    attributed: set[str] = field(default_factory=set)
    fail_status: int | None = None
    echo_in_error_code: bool = False
    delay_s: float = 0.0
    event_tags: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    port: int = 0
    _remaining: int = 0
    _reset: float = 0.0
    _nonces: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def conversions(self) -> list[dict[str, str]]:
        """Every conversion X recorded (answered 200)."""
        return [
            c.params for c in self.calls if c.path.endswith("conversion_event") and c.status == 200
        ]

    def exhaust(self, reset_in_s: float) -> None:
        """No requests left until ``reset_in_s`` from now."""
        self._remaining = 0
        self._reset = time.time() + reset_in_s

    # ------------------------------------------------------------------ contract checks

    def _rate_headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.rate_limit),
            "x-rate-limit-remaining": str(max(0, self._remaining)),
            "x-rate-limit-reset": str(int(self._reset) + (1 if self._reset % 1 else 0)),
        }

    @staticmethod
    def _error(
        status: int,
        code: str,
        message: str,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if parameter is not None:
            error["parameter"] = parameter
        return web.json_response(
            {"errors": [error], "request": {"params": {}}}, status=status, headers=headers
        )

    def _verify_oauth(self, request: web.Request) -> str | None:
        """None when the OAuth 1.0a signature is valid, else the reason."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("OAuth "):
            return "no OAuth header"
        oauth = dict(
            signature.collect_parameters(
                headers={"Authorization": header}, exclude_oauth_signature=False
            )
        )
        if oauth.get("oauth_consumer_key") != self.credentials.consumer_key:
            return "unknown consumer key"
        if oauth.get("oauth_token") != self.credentials.access_token:
            return "unknown access token"
        if oauth.get("oauth_signature_method") != "HMAC-SHA1":
            return "signature method must be HMAC-SHA1"
        if abs(time.time() - int(oauth.get("oauth_timestamp", "0"))) > 300:
            return "stale timestamp"
        nonce = oauth.get("oauth_nonce", "")
        if not nonce or nonce in self._nonces:
            return "replayed nonce"
        self._nonces.add(nonce)
        uri = f"http://{request.host}{request.raw_path}"
        oauth_request = Request(
            uri, http_method=request.method, body=None, headers={"Authorization": header}
        )
        oauth_request.params = signature.collect_parameters(
            uri_query=oauth_request.uri_query,
            headers={"Authorization": header},
            exclude_oauth_signature=True,
        )
        oauth_request.signature = oauth.get("oauth_signature")
        if not signature.verify_hmac_sha1(
            oauth_request, self.credentials.consumer_secret, self.credentials.access_token_secret
        ):
            return "invalid signature"
        return None

    def _check_params(self, params: dict[str, str], raw_query: str) -> web.Response | None:
        for name in ("app_id", "conversion_time", "conversion_type", "hashed_device_id", "os_type"):
            if not params.get(name):
                return self._error(400, "MISSING_PARAMETER", f"{name} is required", name)
        checks: list[tuple[str, bool]] = [
            ("conversion_type", params["conversion_type"] in CONVERSION_TYPES),
            ("os_type", params["os_type"] in ("IOS", "ANDROID")),
            ("conversion_time", bool(_TIME.fullmatch(params["conversion_time"]))),
            ("hashed_device_id", _is_hash(params["hashed_device_id"])),
            ("click_window", params.get("click_window", "14") in ("1", "7", "14", "30")),
            (
                "view_through_window",
                params.get("view_through_window", "1") in ("0", "1", "7", "14", "30"),
            ),
            ("price_micro", params.get("price_micro", "0").isdigit()),
            (
                "price_currency",
                bool(re.fullmatch(r"[A-Z]{3}", params.get("price_currency", "EUR"))),
            ),
            ("number_items", params.get("number_items", "0").isdigit()),
            ("level", params.get("level", "0").isdigit()),
        ]
        if "extra_device_ids" in params:
            checks.append(
                (
                    "extra_device_ids",
                    all(_is_hash(h) for h in params["extra_device_ids"].split(",")),
                )
            )
        if "device_ip_address" in params:
            checks.append(("device_ip_address", _is_ip(params["device_ip_address"])))
        for name, ok in checks:
            if not ok:
                return self._error(400, "INVALID_PARAMETER", f"{name} is invalid", name)
        if int(params.get("click_window", "14")) < int(params.get("view_through_window", "1")):
            return self._error(
                400,
                "INVALID_PARAMETER",
                "click_window must be >= view_through_window",
                "click_window",
            )
        # base64's + / = must arrive percent-encoded, or they change meaning in a query.
        for part in raw_query.split("&"):
            name, _, value = part.partition("=")
            if name in ("hashed_device_id", "extra_device_ids") and any(c in value for c in "+/="):
                return self._error(400, "INVALID_PARAMETER", f"{name} is not percent-encoded", name)
        if self.apps.get(params["app_id"]) != params["os_type"]:
            return self._error(404, "MACT_APP_NOT_FOUND", "no such app for this provider")
        return None

    # ------------------------------------------------------------------ handlers

    async def _conversion(self, request: web.Request) -> web.Response:
        import asyncio

        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        response = await self._answer(request, params)
        self.calls.append(Call(request.path, response.status, params, time.monotonic()))
        return response

    async def _answer(self, request: web.Request, params: dict[str, str]) -> web.Response:
        now = time.time()
        if now >= self._reset:
            self._remaining, self._reset = self.rate_limit, now + self.window_s
        if self._remaining <= 0:
            return self._error(
                429, "TOO_MANY_REQUESTS", "rate limit exceeded", headers=self._rate_headers()
            )
        self._remaining -= 1
        headers = self._rate_headers()
        problem = self._verify_oauth(request)
        if problem is not None:
            return self._error(401, "UNAUTHORIZED_ACCESS", problem, headers=headers)
        if self.fail_status is not None:
            return self._error(self.fail_status, "SERVICE_UNAVAILABLE", "induced", headers=headers)
        invalid = self._check_params(params, request.rel_url.raw_query_string)
        if invalid is not None:
            return invalid
        if self.echo_in_error_code:
            ip = params.get("device_ip_address", "")
            return web.json_response(
                {
                    "errors": [{"code": f"INVALID_IP {ip}", "message": f"cannot use {ip}"}],
                    "request": {"params": params},
                },
                status=400,
                headers=headers,
            )
        attribution = None
        if params["hashed_device_id"] in self.attributed:
            attribution = {
                "country_code": "US",
                "engagement_time": params["conversion_time"],
                "engagement_type": "CLICK",
                "attribution_type": "PROMOTED",
                "promoted_properties": {
                    "campaign_id": "4ns44",
                    "line_item_id": "3x44d",
                    "account_id": "18ce11e3egb",
                },
                "tweet_id": "11434635565377600",
            }
        data = {
            "conversion_value_micro": int(params.get("price_micro", "0")),
            "view_through_window": int(params.get("view_through_window", "1")),
            "tpn_attribution": None,
            "conversion_time": params["conversion_time"],
            "click_window": int(params.get("click_window", "14")),
            "limit_ad_tracking": False,
            "event_metadata": None,
            "non_twitter_engagement_type": None,
            "conversion_type": params["conversion_type"],
            "partner_client_id": "postback-hub",
            "app_id": params["app_id"],
            "hashed_device_id": params["hashed_device_id"],
            "twitter_attribution": attribution,
            "os_type": params["os_type"],
            "non_twitter_engagement_time": None,
        }
        return web.json_response({"data": data, "request": {"params": params}}, headers=headers)

    async def _event_tags(self, request: web.Request) -> web.Response:
        problem = self._verify_oauth(request)
        if problem is not None:
            return self._error(401, "UNAUTHORIZED_ACCESS", problem)
        return web.json_response(
            {
                "request": {"params": {"account_id": request.match_info["account"]}},
                "next_cursor": None,
                "data": self.event_tags,
            }
        )

    async def start(self) -> FakeX:
        app = web.Application()
        app.router.add_post("/12/conversion_event", self._conversion)
        app.router.add_get("/12/conversion_attribution", self._conversion)
        app.router.add_get("/12/accounts/{account}/app_event_tags", self._event_tags)
        self._runner, self.port = await serve_locally(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _is_hash(value: str) -> bool:
    try:
        return len(value) == 44 and len(base64.b64decode(value, validate=True)) == 32
    except ValueError:
        return False


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
