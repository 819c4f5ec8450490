"""Shared pieces of the benchmarks: a broker, a partner process, timing helpers."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from postback_hub.service.localkafka import LocalKafka, free_port

HERE = Path(__file__).resolve().parent


def quiet_kafka_logs() -> None:
    """aiokafka warns while a freshly created topic elects its leaders (it retries by
    itself); every round creates topics, and the warnings would bury the figures."""
    logging.getLogger("aiokafka").setLevel(logging.ERROR)


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """An existing broker, or a fresh local one for the run."""
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="postback-hub-bench-") as data:
        kafka = LocalKafka(Path(data), port=free_port(), controller_port=free_port())
        kafka.start()
        try:
            yield kafka.bootstrap_servers
        finally:
            kafka.stop()


@contextlib.contextmanager
def partner_process(role: str = "partner") -> Iterator[str]:
    """A partner answering at once in a process of its own (roles: answer_server.py)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "answer_server.py"), str(port), role],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    assert process.stdout is not None
    process.stdout.readline()  # the port: it is listening
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()
