"""The receiver as operators run it: real processes, signals, logs, several workers."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from postback_hub.service.localkafka import LocalKafka, free_port
from tests.support import (
    SECRET,
    eventually,
    read_records,
    receiver_process,
    settings_document,
    wait_http_ok,
    write_config,
)

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, broker: LocalKafka, topic: str, port: int, **receiver: Any) -> Path:
    document = settings_document(broker.bootstrap_servers, topic, port, receiver=receiver)
    return write_config(tmp_path / "config.toml", document)


async def test_sigterm_under_load_answers_everything_and_loses_nothing(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str
) -> None:
    port = free_port()
    config = _config(tmp_path, kafka_broker, topic, port, shutdown_drain_s=0.5)
    with receiver_process(config, tmp_path / "receiver.log", workers=2) as process:
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        statuses: list[int] = []
        accepted: list[str] = []
        transport_errors_after_sigterm = 0
        terminated = asyncio.Event()

        async def client(worker: int, session: aiohttp.ClientSession) -> None:
            nonlocal transport_errors_after_sigterm
            for i in range(10_000):
                url = (
                    f"http://127.0.0.1:{port}/v1/adjust/demo?secret={SECRET}"
                    f"&activity_kind=event&event=e&adid={worker + 1:016x}{i:016x}"
                )
                try:
                    async with session.get(url) as response:
                        statuses.append(response.status)
                        if response.status == 200:
                            accepted.append((await response.json())["fingerprint"])
                except aiohttp.ClientError:
                    # Only once the listener is closing may a connection be refused or cut;
                    # Adjust retries those like any unreachable endpoint.
                    assert terminated.is_set()
                    transport_errors_after_sigterm += 1
                    return

        async with aiohttp.ClientSession() as session:
            clients = [asyncio.create_task(client(w, session)) for w in range(16)]
            # Under load: the signal comes once callbacks are flowing, not after a set time.
            await eventually(lambda: len(accepted) >= 200, what="200 callbacks accepted")
            process.send_signal(signal.SIGTERM)
            terminated.set()
            await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
        assert process.wait(timeout=60) == 0

    assert set(statuses) <= {200, 503}
    assert len(accepted) > 50
    records = await read_records(kafka_broker.bootstrap_servers, topic, len(accepted))
    stored = {orjson.loads(r.value)["fingerprint"] for r in records}
    assert set(accepted) <= stored
    print(
        f"\nSIGTERM under load: {len(statuses)} answered ({statuses.count(200)} x 200, "
        f"{statuses.count(503)} x 503), {transport_errors_after_sigterm} refused after SIGTERM"
    )


async def test_no_device_id_ip_or_secret_reaches_the_log(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str
) -> None:
    port = free_port()
    config = _config(tmp_path, kafka_broker, topic, port)
    idfa = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
    gps = "df07c7dc-cea7-4a89-b328-810ff5acb15d"
    adid = "c0ffee00c0ffee00c0ffee00c0ffee00"
    ip = "198.51.100.77"
    sensitive = [SECRET, idfa, gps, adid, ip, "wrong-secret-value"]
    base = f"http://127.0.0.1:{port}/v1/adjust/demo"
    log_path = tmp_path / "receiver.log"
    with receiver_process(config, log_path) as process:
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        ids = f"adid={adid}&idfa={idfa}&gps_adid={gps}&ip_address={ip}"
        async with aiohttp.ClientSession() as session:
            for query, status in [
                (f"secret={SECRET}&activity_kind=install&{ids}", 200),
                (f"secret=wrong-secret-value&activity_kind=install&{ids}", 401),
                (f"secret={SECRET}&activity_kind=install&{ids}&created_at=bad", 400),
                (f"secret={SECRET}&activity_kind=event&{ids}", 400),
                (f"secret={SECRET}&activity_kind=install&{ids}&city=%FF", 400),
            ]:
                async with session.get(
                    f"{base}?{query}", headers={"X-Forwarded-For": ip}
                ) as response:
                    assert response.status == status
            async with session.get(
                f"http://127.0.0.1:{port}/v1/adjust/{adid}?secret={SECRET}&{ids}"
            ) as response:
                assert response.status == 404
        # A request that is not even valid HTTP, echoing ids in the request line.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /v1/adjust/demo?secret={SECRET}&{ids}&x=".encode()
            + b"\xff HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await writer.drain()
        await reader.read()
        writer.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) > 10
    for line in lines:
        json.loads(line)  # every line is structured
    for value in sensitive:
        assert value not in text
        assert value.lower() not in text.lower()
    assert re.search(r'"msg":"callback rejected".*"code":"invalid_secret"', text)


async def test_workers_share_one_port_and_metrics_add_up(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str
) -> None:
    port = free_port()
    config = _config(tmp_path, kafka_broker, topic, port)
    log_path = tmp_path / "receiver.log"
    with receiver_process(config, log_path, workers=2) as process:
        # Readiness is per process: wait until both workers' producers are connected.
        await eventually(
            lambda: log_path.read_text().count("kafka producer connected") >= 2,
            interval=0.1,
            what="both workers' producers connected",
        )
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as session:
            for i in range(40):
                url = (
                    f"http://127.0.0.1:{port}/v1/adjust/demo?secret={SECRET}"
                    f"&activity_kind=install&adid={i + 1:032x}"
                )
                async with session.get(url) as response:
                    assert response.status == 200
            total = 0.0

            async def all_counted() -> bool:
                nonlocal total
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                match = re.search(
                    r'postback_hub_requests_total\{app="demo",kind="install",status="200"\} (\S+)',
                    text,
                )
                total = float(match.group(1)) if match else 0.0
                return total == 40

            await eventually(
                all_counted, 10, interval=0.0, what=lambda: f"40 requests counted (saw {total})"
            )
            assert total == 40.0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    log = (tmp_path / "receiver.log").read_text()
    assert log.count('"msg":"receiver listening"') == 2


async def test_workers_do_not_outlive_a_killed_supervisor(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str
) -> None:
    port = free_port()
    config = _config(tmp_path, kafka_broker, topic, port)
    with receiver_process(config, tmp_path / "receiver.log", workers=2) as process:
        await wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        children = _children(process.pid)
        assert len(children) == 2
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        await eventually(
            lambda: not any(_alive(pid) for pid in children),
            interval=0.1,
            what="every worker exiting with its supervisor",
        )


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
