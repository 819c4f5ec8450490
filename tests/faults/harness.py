"""Fault-injection harness: the whole pipeline as separate processes under Adjust-like load.

- :class:`AdjustLoad` sends callbacks the way Adjust does: one request per
  activity, retried on 5xx, timeouts and connection errors with backoff, given
  up after a bounded number of tries; it records every answer.
- :class:`Pipeline` runs ``postback-hub serve`` and one ``postback-hub consume``
  process per destination against a broker, with a fake module partner and a
  fake X in the test process.
- :func:`summary` records sent, acknowledged, given up, delivered and duplicates
  per destination, dead-lettered; :func:`check_invariants` asserts the claim:
  every acknowledged callback reaches every destination it is routed to, X never
  gets a conversion twice, and the receiver answers no 5xx but 503.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from postback_hub.consumers.dlq import read_dead_letters
from postback_hub.service.localkafka import LocalKafka, free_port
from postback_hub.service.settings import Settings
from tests.fake_partner import FakePartner
from tests.fake_x import FakeX
from tests.figures import RecordFigures
from tests.support import (
    SECRET,
    eventually,
    make_settings,
    module_destination,
    settings_document,
    spawn_postback_hub,
    wait_http_ok,
    write_config,
    x_destination,
)

SOAK = os.environ.get("POSTBACK_HUB_SOAK") == "1"
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)


@dataclass
class AdjustLoad:
    """Callbacks as Adjust sends them, with Adjust's retry behaviour (compressed in time)."""

    url: str
    rate_per_s: float
    max_tries: int = 6
    timeout_s: float = 5.0
    sent: int = 0
    acknowledged: dict[str, str] = field(default_factory=dict)  # idfa -> fingerprint
    acknowledged_at: dict[str, float] = field(default_factory=dict)  # idfa -> monotonic time
    given_up: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0

    def callback_query(self, n: int) -> tuple[str, str]:
        idfa = f"{n:08X}-8246-4BA4-AE5B-76104861E7DC"
        query = (
            f"secret={SECRET}&activity_kind=install&adid={n + 1:032x}&idfa={idfa}"
            f"&created_at_milli={1_700_000_000_000 + n}&environment=production"
        )
        return idfa, query

    async def _one(self, session: aiohttp.ClientSession, n: int) -> None:
        idfa, query = self.callback_query(n)
        for attempt in range(self.max_tries):
            try:
                async with session.get(
                    f"{self.url}?{query}", timeout=aiohttp.ClientTimeout(total=self.timeout_s)
                ) as response:
                    self.statuses[response.status] += 1
                    if response.status == 200:
                        self.acknowledged[idfa] = (await response.json())["fingerprint"]
                        self.acknowledged_at[idfa] = time.monotonic()
                        return
                    if response.status < 500:
                        return  # Adjust drops a 4xx for good
            except (aiohttp.ClientError, TimeoutError):
                self.transport_errors += 1
            await asyncio.sleep(
                BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)] * random.uniform(0.8, 1.2)
            )
        self.given_up.append(idfa)

    async def run(self, duration_s: float) -> None:
        """Send at ``rate_per_s`` for ``duration_s``; wait for every callback's last try."""
        connector = aiohttp.TCPConnector(limit=200, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks: list[asyncio.Task[None]] = []
            started = time.monotonic()
            while time.monotonic() - started < duration_s:
                tasks.append(asyncio.create_task(self._one(session, self.sent)))
                self.sent += 1
                await asyncio.sleep(1 / self.rate_per_s)
            await asyncio.gather(*tasks)


# The module partner's bound on deliveries waiting for their de-dup marks: with its
# concurrency, the most a consumer crash may make the partner receive twice.
MODULE_UNACKNOWLEDGED_MARKS = 64
MODULE_CONCURRENCY = 16


@dataclass
class Pipeline:
    broker: LocalKafka
    topic: str
    workdir: Path
    partner: FakePartner
    fake_x: FakeX
    port: int = 0
    receiver: subprocess.Popen[bytes] | None = None
    consumers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _config: Path | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/adjust/demo"

    def _options(self) -> dict[str, Any]:
        """The pipeline's settings beyond the broker, topic and port."""
        module = module_destination(
            self.partner.url,
            retry={"park_delays_s": [1.0, 3.0]},
            max_unacknowledged_marks=MODULE_UNACKNOWLEDGED_MARKS,
        )
        x = x_destination(self.fake_x.url, concurrency=16)
        return {
            "produce_timeout_s": 2.0,
            "receiver": {"shutdown_drain_s": 0.2, "workers": 2},
            "kafka": {"create_topic": True, "topic_partitions": 6},
            "destinations": {"bia": module, "x": x},
        }

    def document(self) -> dict[str, Any]:
        return settings_document(
            self.broker.bootstrap_servers, self.topic, self.port, **self._options()
        )

    def settings(self) -> Settings:
        return make_settings(
            self.broker.bootstrap_servers, self.topic, self.port, **self._options()
        )

    def start(self) -> None:
        self.port = free_port()
        self._config = write_config(self.workdir / "config.toml", self.document())
        self._log = (self.workdir / "pipeline.log").open("ab")
        self.start_receiver()
        for name in ("bia", "x"):
            self.start_consumer(name)

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        assert self._config is not None
        assert self._log is not None
        return spawn_postback_hub(list(args), self._config, self._log)

    def start_receiver(self) -> None:
        self.receiver = self._spawn("serve")

    def start_consumer(self, name: str) -> None:
        self.consumers[name] = self._spawn("consume", name)

    def signal_receiver(self, signum: int) -> None:
        assert self.receiver is not None
        self.receiver.send_signal(signum)
        self.receiver.wait(timeout=60)

    def kill_consumer(self, name: str) -> None:
        self.consumers[name].send_signal(signal.SIGKILL)
        self.consumers[name].wait(timeout=10)

    async def ready(self) -> None:
        await wait_http_ok(f"http://127.0.0.1:{self.port}/readyz", timeout=60)

    def stop(self) -> None:
        for process in [self.receiver, *self.consumers.values()]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [self.receiver, *self.consumers.values()]:
            if process is not None:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        if self._log is not None:
            self._log.close()


async def delivered_everywhere(pipeline: Pipeline, load: AdjustLoad, timeout: float = 90) -> None:
    """Wait until every acknowledged callback reached the module partner and is accounted
    for at X: posted, or dead-lettered (as ambiguous, which :func:`check_invariants`
    checks) for review. Fails if that does not happen within ``timeout``."""
    wanted = set(load.acknowledged.values())
    settings = pipeline.settings()
    seen = {"partner": 0, "x": 0, "x dead letters": 0}

    async def everywhere() -> bool:
        seen["partner"] = len(wanted & set(pipeline.partner.fingerprints()))
        seen["x"] = len({c["hashed_device_id"] for c in pipeline.fake_x.conversions()})
        if seen["partner"] < len(wanted):
            return False
        if seen["x"] >= len(wanted):
            return True
        seen["x dead letters"] = len([_ async for _ in read_dead_letters(settings, "x")])
        return seen["x"] + seen["x dead letters"] >= len(wanted)

    await eventually(
        everywhere,
        timeout,
        interval=0.5,
        what=lambda: f"{len(wanted)} acknowledged callbacks at both destinations ({seen})",
    )


async def summary(
    name: str, pipeline: Pipeline, load: AdjustLoad, record: RecordFigures
) -> dict[str, Any]:
    """The scenario's figures, recorded for the run's summary (see tests/figures.py)."""
    settings = pipeline.settings()
    partner = Counter(pipeline.partner.fingerprints())
    x = Counter(
        (c["hashed_device_id"], c["conversion_time"]) for c in pipeline.fake_x.conversions()
    )
    dead = {
        name: [letter.reason async for letter in read_dead_letters(settings, name)]
        for name in ("bia", "x")
    }
    figures = {
        "sent": load.sent,
        "acknowledged": len(load.acknowledged),
        "given_up": len(load.given_up),
        "statuses": dict(load.statuses),
        "delivered_partner": len(partner),
        "duplicates_partner": sum(n - 1 for n in partner.values()),
        "delivered_x": len(x),
        "duplicates_x": sum(n - 1 for n in x.values()),
        "dead_lettered": {k: len(v) for k, v in dead.items()},
        "dead_reasons": {k: sorted(set(v)) for k, v in dead.items()},
    }
    record(name, figures)
    return figures


def x_latencies(pipeline: Pipeline, load: AdjustLoad) -> list[tuple[float, float]]:
    """(acknowledged at, seconds until X received it) per conversion."""
    from postback_hub.consumers.x.mapping import decode_key, hash_device_id
    from tests.support import X_KEY_B64

    key = decode_key(X_KEY_B64)
    received: dict[str, float] = {}
    for call in pipeline.fake_x.calls:
        if call.status == 200:
            received.setdefault(call.params["hashed_device_id"], call.at)
    pairs = []
    for idfa, acked in load.acknowledged_at.items():
        at = received.get(hash_device_id(key, idfa))
        if at is not None:
            pairs.append((acked, max(0.0, at - acked)))
    return pairs


def check_invariants(figures: dict[str, Any], pipeline: Pipeline, load: AdjustLoad) -> None:
    acknowledged = set(load.acknowledged.values())
    missing = acknowledged - set(pipeline.partner.fingerprints())
    assert not missing, f"{len(missing)} acknowledged callbacks never reached the module partner"
    # X: delivered once, or dead-lettered as ambiguous for review: never twice, never silently lost.
    assert figures["duplicates_x"] == 0
    x_accounted = figures["delivered_x"] + figures["dead_lettered"]["x"]
    assert x_accounted >= len(acknowledged), "acknowledged conversions unaccounted for at X"
    assert all(reason.startswith("ambiguous") for reason in figures["dead_reasons"]["x"])
    fivexx = {status for status in load.statuses if status >= 500}
    assert fivexx <= {503}, f"the receiver answered {fivexx}"
