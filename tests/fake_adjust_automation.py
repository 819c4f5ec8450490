"""A local Adjust App Automation API for tests that enforces the documented contract.

- ``AdjustAuthorization: Token <api token>`` on every call, else 401; a
  ``SignatureAuthorization`` header, when sent, must carry the signature token
  (401), and ``android_signature_hash`` needs it.
- ``POST /app``: a JSON object with ``name``, ``store_id``, ``platform``
  (``ios``/``android``) and ``bundle_id``; nothing undocumented; a known
  ``template_app_token`` for a new app, ``force_update`` for an existing one
  (otherwise 400). ``channel_setup`` is *replaced whole* when sent.
- ``GET /app?store_id=&platform=``, ``GET /app/{token}``, ``.../channels``: 404
  for unknown apps, 403 for apps the user may not see.
- ``GET /status/{ticket}``: every poll moves a ticket one step NEW, OPENED, then
  COMPLETED (or FAILED when asked), with per-section results.
- Injected answers: ``fail_next`` (status, headers) pairs answered before the
  contract is checked (429 with Retry-After, 5xx, ...); ``redirect_to`` answers
  every call with a 302 to that URL.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support import serve_locally

API_TOKEN = "adj-api-T0KEN-7f3c9e"
SIGNATURE_TOKEN = "adj-sig-T0KEN-41aa02"
_CREATE_FIELDS = {
    "name",
    "store_id",
    "platform",
    "bundle_id",
    "android_signature_hash",
    "channel_setup",
    "editors",
    "template_app_token",
    "force_update",
}


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    authorized: bool


@dataclass
class FakeAutomation:
    api_token: str = API_TOKEN
    signature_token: str = SIGNATURE_TOKEN
    # app token -> app (adjust_app_token, name, platform, store_id, bundle_id, channel_setup)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: dict[str, list[str]] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    fail_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    redirect_to: str | None = None
    # Tickets whose settings copy fails at the partners section.
    fail_tickets: bool = False
    tickets: dict[str, list[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _counter: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def add_app(
        self,
        token: str,
        store_id: str,
        platform: str,
        name: str = "Demo",
        channel_setup: dict[str, Any] | None = None,
        channels: list[str] | None = None,
    ) -> None:
        self.apps[token] = {
            "adjust_app_token": token,
            "name": name,
            "platform": platform,
            "store_id": store_id,
            "bundle_id": store_id,
            "channel_setup": channel_setup or {},
            "additional_info": {"overrides": {}},
            "cross_promo_token": None,
            "android_signature_hash": None,
        }
        self.channels[token] = list(channels or [])

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    def _app_answer(self, app: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in app.items() if k != "bundle_id"}

    def _new_ticket(self) -> str:
        ticket = str(uuid.uuid4())
        end = "FAILED" if self.fail_tickets else "COMPLETED"
        self.tickets[ticket] = ["NEW", "OPENED", end]
        return ticket

    # ------------------------------------------------------------------ the one handler

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        raw = await request.read()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        auth = request.headers.get("AdjustAuthorization")
        authorized = auth == f"Token {self.api_token}"
        call = Call(request.method, request.path, dict(request.query), body, 0, authorized)
        self.calls.append(call)
        response = await self._answer(request, body, authorized)
        call.status = response.status
        return response

    async def _answer(self, request: web.Request, body: Any, authorized: bool) -> web.Response:
        if self.redirect_to is not None:
            return web.Response(status=302, headers={"Location": self.redirect_to})
        if self.fail_next:
            status, headers = self.fail_next.pop(0)
            return web.json_response({"error": "injected"}, status=status, headers=headers)
        if not authorized:
            return self._error(401, "Invalid or missing AdjustAuthorization token")
        signature = request.headers.get("SignatureAuthorization")
        if signature is not None and signature != f"Token {self.signature_token}":
            return self._error(401, "Invalid SignatureAuthorization token")
        path = request.path.removeprefix("/api")
        parts = [p for p in path.split("/") if p]
        if request.method == "POST" and parts == ["app"]:
            return self._create(body, signature is not None)
        if request.method != "GET":
            return self._error(405, "method not allowed")
        if parts == ["app"]:
            return self._by_store_id(request)
        if len(parts) in (2, 3) and parts[0] == "app":
            app = self.apps.get(parts[1])
            if parts[1] in self.forbidden:
                return self._error(403, "You don't have access to this app")
            if app is None:
                return self._error(404, "App not found")
            if len(parts) == 2:
                return web.json_response(self._app_answer(app))
            if parts[2] == "channels":
                return web.json_response(self.channels.get(parts[1], []))
        if len(parts) == 2 and parts[0] == "status":
            return self._status(parts[1])
        return self._error(404, "Not found")

    def _by_store_id(self, request: web.Request) -> web.Response:
        store_id = request.query.get("store_id")
        platform = request.query.get("platform")
        if not store_id or not platform:
            return self._error(400, "store_id and platform are required")
        if platform not in ("ios", "android"):
            return self._error(400, "platform must be android or ios")
        for token, app in self.apps.items():
            if app["store_id"] == store_id and app["platform"] == platform:
                if token in self.forbidden:
                    return self._error(403, "You don't have access to this app")
                return web.json_response(self._app_answer(app))
        return self._error(404, "App not found")

    def _create(self, body: Any, signed: bool) -> web.Response:
        if not isinstance(body, dict):
            return self._error(400, "The body must be a JSON object")
        unknown = sorted(set(body) - _CREATE_FIELDS)
        if unknown:
            return self._error(400, f"Unknown fields: {', '.join(unknown)}")
        missing = [f for f in ("name", "store_id", "platform", "bundle_id") if not body.get(f)]
        if missing:
            return self._error(400, f"Missing required fields: {', '.join(missing)}")
        if body["platform"] not in ("ios", "android"):
            return self._error(400, "platform must be android or ios")
        setup = body.get("channel_setup")
        if setup is not None and not (
            isinstance(setup, dict) and all(isinstance(v, dict) for v in setup.values())
        ):
            return self._error(400, "channel_setup must map channels to objects")
        if "android_signature_hash" in body and not signed:
            return self._error(403, "android_signature_hash needs SignatureAuthorization")
        existing = next(
            (
                a
                for a in self.apps.values()
                if a["store_id"] == body["store_id"] and a["platform"] == body["platform"]
            ),
            None,
        )
        if existing is not None:
            if body.get("force_update") is not True:
                return self._error(400, "App already exists; send force_update to update it")
            existing.update(name=body["name"], bundle_id=body["bundle_id"])
            if setup is not None:
                existing["channel_setup"] = setup  # replaced whole, never merged
            app = existing
        else:
            template = self.apps.get(str(body.get("template_app_token")))
            if template is None:
                return self._error(400, "template_app_token: no such app")
            self._counter += 1
            token = f"new{self._counter:09d}"
            app = {
                **template,
                "adjust_app_token": token,
                "name": body["name"],
                "platform": body["platform"],
                "store_id": body["store_id"],
                "bundle_id": body["bundle_id"],
                "channel_setup": setup if setup is not None else dict(template["channel_setup"]),
            }
            self.apps[token] = app
            self.channels[token] = []
        return web.json_response(
            {
                "adjust_app_token": app["adjust_app_token"],
                "name": app["name"],
                "sk_app_id": None,
                "store_id": app["store_id"],
                "bundle_id": app["bundle_id"],
                "ticket_token": self._new_ticket(),
            }
        )

    def _status(self, ticket: str) -> web.Response:
        steps = self.tickets.get(ticket)
        if steps is None:
            return self._error(404, "Ticket not found")
        status = steps[0] if len(steps) == 1 else steps.pop(0)
        result: dict[str, Any] = {}
        if status in ("OPENED", "COMPLETED", "FAILED"):
            result["events"] = {"successes": ["purchase"], "failures": []}
        if status == "COMPLETED":
            result["partners"] = {"successes": ["facebook"], "failures": []}
        if status == "FAILED":
            result["partners"] = {
                "section": "partners",
                "detail": "Could not be started because events section has failed",
            }
        return web.json_response({"status": status, "kind": "migration", "result": result})

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeAutomation:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve_locally(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class OtherHost:
    """Another host a redirect points at; records every header set it was sent."""

    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        # "localhost", not 127.0.0.1: a different host name, as a real redirect would be.
        return f"http://localhost:{self.port}/collect"

    async def _handle(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        return web.json_response({"adjust_app_token": "stolen", "platform": "ios"})

    async def start(self) -> OtherHost:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve_locally(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
