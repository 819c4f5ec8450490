"""Two things on one port: another program, or another postback-hub deployment."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest

from postback_hub.service.localkafka import LocalKafka, free_port
from tests.support import (
    SECRET,
    SECRET_ENV,
    eventually,
    receiver_process,
    settings_document,
    wait_http_ok,
    write_config,
)

pytestmark = pytest.mark.integration


def _config(path: Path, broker: LocalKafka, topic: str, port: int, secret_env: str) -> Path:
    apps = {"demo": {"secret": {"env": secret_env}}}
    document = settings_document(broker.bootstrap_servers, topic, port, apps=apps)
    return write_config(path, document)


def _finished(process: subprocess.Popen[bytes], log: Path) -> tuple[int, list[str]]:
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the second instance kept running")
    return code, [line for line in log.read_text().splitlines() if line.strip()]


async def test_a_port_held_by_another_program_fails_once_with_one_line(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str
) -> None:
    port = free_port()
    config = _config(tmp_path / "config.toml", kafka_broker, topic, port, SECRET_ENV)
    with socket.create_server(("127.0.0.1", port)):  # another program, listening
        for workers in (1, 2):
            log = tmp_path / f"receiver-{workers}.log"
            with receiver_process(config, log, workers=workers) as process:
                code, lines = _finished(process, log)
            assert code != 0
            assert lines == [
                f"postback-hub: port {port} on 127.0.0.1 is in use by another program; "
                "free it or set another receiver.port (--port)"
            ]


async def test_another_deployment_cannot_join_a_served_port(
    tmp_path: Path, kafka_broker: LocalKafka, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTBACK_HUB_TEST_OTHER_SECRET", "another-deployments-secret")
    port = free_port()
    first = _config(tmp_path / "first.toml", kafka_broker, topic, port, SECRET_ENV)
    # Other secrets: sharing the port would answer half of the first one's callbacks 401.
    other = _config(
        tmp_path / "other.toml", kafka_broker, topic, port, "POSTBACK_HUB_TEST_OTHER_SECRET"
    )
    url = f"http://127.0.0.1:{port}/v1/adjust/demo?secret={SECRET}&activity_kind=install"
    with receiver_process(first, tmp_path / "first.log", workers=2) as serving:
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        log = tmp_path / "other.log"
        with receiver_process(other, log, workers=2) as intruder:
            code, lines = _finished(intruder, log)
        assert code != 0
        assert len(lines) == 1
        assert lines[0].startswith(
            f"postback-hub: port {port} on 127.0.0.1 is served by another postback-hub "
            "deployment (pid "
        )
        # The same configuration joins on purpose, and every callback still gets a 200.
        joined_log = tmp_path / "joined.log"
        with receiver_process(first, joined_log) as joined:

            def producer_connected() -> bool:
                assert joined.poll() is None, "the joining instance exited"
                return "kafka producer connected" in joined_log.read_text()

            await eventually(
                producer_connected, interval=0.1, what="the joining instance's producer connected"
            )
            async with aiohttp.ClientSession() as session:
                for i in range(1, 41):
                    async with session.get(f"{url}&adid={i:032x}") as response:
                        assert response.status == 200
            assert joined.poll() is None
            joined.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(joined.wait, 30) == 0
        serving.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(serving.wait, 60) == 0
