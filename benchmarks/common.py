"""Shared pieces of the benchmarks: a broker, a partner process, timing helpers."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from service.localkafka import LocalKafka, free_port

HERE = Path(__file__).resolve().parent


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
def partner_process(script: str = "partner_server.py", *args: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / script), str(port), *args],
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


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.elapsed = time.perf_counter() - self.started
