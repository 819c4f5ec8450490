"""A local module partner for tests: checks the request contract, records what it accepts,
and can be told to fail (status codes, slowness) for a while."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from aiohttp import web

from tests.support import eventually, serve_locally


@dataclass
class Received:
    path: str
    params: dict[str, str]
    at: float


@dataclass
class FakePartner:
    """``/pb/{partner_id}`` (or ``/pb/sandbox-{partner_id}``) with ``activity_kind``, ``adid``
    and ``created_at`` in the query: 401 for another partner id, 400 for a missing parameter."""

    partner_id: str = "partner-1"
    required: tuple[str, ...] = ("activity_kind", "adid", "created_at")
    received: list[Received] = field(default_factory=list)
    # Answer this status (and count the request as not received) while set.
    fail_status: int | None = None
    delay_s: float = 0.0
    rejected: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        params = {k: v[0] for k, v in parse_qs(request.query_string).items()}
        if request.match_info["partner"] not in (self.partner_id, f"sandbox-{self.partner_id}"):
            self.rejected += 1
            return web.json_response({"error": "unknown partner id"}, status=401)
        if self.fail_status is not None:
            self.rejected += 1
            return web.json_response(
                {"error": "induced"}, status=self.fail_status, headers={"Retry-After": "0"}
            )
        missing = [name for name in self.required if name not in params]
        if missing:
            self.rejected += 1
            return web.json_response({"error": f"missing {', '.join(missing)}"}, status=400)
        self.received.append(Received(request.path, params, time.monotonic()))
        return web.json_response({"status": "ok"})

    async def start(self) -> FakePartner:
        app = web.Application()
        app.router.add_route("*", "/pb/{partner}", self._handle)
        self._runner, self.port = await serve_locally(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def adids(self) -> list[str]:
        return [r.params["adid"] for r in self.received]

    def fingerprints(self) -> list[str]:
        return [r.params["fp"] for r in self.received]

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the partner has accepted ``count`` requests."""
        await eventually(
            lambda: len(self.received) >= count,
            timeout,
            what=lambda: f"{count} requests at the partner (it got {len(self.received)})",
        )
