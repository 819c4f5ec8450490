"""``python -m tests.kpi_sink_runner CONFIG NAME``: one KPI sink as a process, as the
destination runner will run it (SIGTERM stops it; the tests SIGKILL it)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from postback_hub.consumers.kpi import build_sink
from postback_hub.consumers.registry import load_settings
from postback_hub.service.logs import configure_logging
from tests.kpi_support import kpi_registry


async def _run(config: Path, name: str) -> int:
    settings = load_settings(config, registry=kpi_registry())
    configure_logging(settings.logging.level)
    sink = build_sink(settings, name)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, sink.stop)
    try:
        await sink.start()
        await sink.run()
    finally:
        await sink.close(5.0)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_run(Path(sys.argv[1]), sys.argv[2])))
