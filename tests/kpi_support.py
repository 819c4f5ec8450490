"""Helpers of the KPI tests: settings with a ``kpi`` destination, the sink as a process,
and reading the store's offsets back (tests wait for them with ``tests.support.eventually``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from postback_hub.consumers.kpi import KpiDestination, build_sink
from postback_hub.consumers.registry import DestinationType, Registry, default_registry
from postback_hub.kpi.store import KpiStore
from postback_hub.service.settings import Settings
from tests.support import REPO, SECRET, SECRET_ENV, make_settings, settings_document


def kpi_registry() -> Registry:
    """The shipped destination types plus ``kpi`` (until the CLI registers it itself)."""
    return default_registry().with_type(DestinationType("kpi", KpiDestination, build_sink))


def kpi_destinations(**destination: Any) -> dict[str, Any]:
    """``[destinations.kpi]``, a sink that waits little for a batch to fill."""
    return {"kpi": {"type": "kpi", "max_batch_wait_s": 0.05, **destination}}


def kpi_document(
    bootstrap_servers: str, topic: str, database_url: str, **destination: Any
) -> dict[str, Any]:
    return settings_document(
        bootstrap_servers,
        topic,
        destinations=kpi_destinations(**destination),
        kpi={"database_url": database_url},
    )


def kpi_settings(
    bootstrap_servers: str, topic: str, database_url: str, **destination: Any
) -> Settings:
    return make_settings(
        bootstrap_servers,
        topic,
        0,
        kpi_destinations(**destination),
        kpi_registry(),
        kpi={"database_url": database_url},
    )


def stored_offsets(database_url: str, name: str, topic: str) -> dict[int, int]:
    store = KpiStore.open(database_url)
    try:
        return store.stored_offsets(name, topic)
    finally:
        store.close()


def spawn_sink(config: Path, name: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """The sink of ``[destinations.NAME]`` as a real process (see tests.kpi_sink_runner)."""
    env = {**os.environ, SECRET_ENV: SECRET}
    command = [sys.executable, "-m", "tests.kpi_sink_runner", str(config), name]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
