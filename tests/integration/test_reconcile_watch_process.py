"""`postback-hub reconcile --watch` as a real process: it reconciles the lookback's
complete days against a strict fake, serves the gauges on /metrics, logs one warning
line per gap, stops cleanly on SIGTERM, and never prints the token."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from postback_hub.adjust.reconcile_watch import due_days
from postback_hub.service.localkafka import free_port
from tests.fake_adjust_reports import Activity, FakeAdjust
from tests.support import (
    SECRET_ENV,
    eventually,
    settings_document,
    spawn_postback_hub,
    write_config,
)

TOKEN_ENV = "POSTBACK_HUB_TEST_ADJUST_TOKEN"
TOKEN = "watch-Tok3n-never-printed"


async def test_the_watch_publishes_gauges_and_logs_each_gap_once(tmp_path: Path) -> None:
    offset_s = 5 * 3600 + 30 * 60
    days = due_days(datetime.now(UTC), offset_s, 2)
    fake = await FakeAdjust(token=TOKEN, events={"abc123": "Purchase"}).start()
    # Adjust counts installs on both due days; we received nothing at all.
    for n, day in enumerate(days):
        at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC) - timedelta(seconds=offset_s)
        fake.activities += [Activity("install", at, "Google", "in")] * (7 + n)
    doc = settings_document("127.0.0.1:1", "callbacks")
    doc["apps"] = {
        "demo": {
            "secret": {"env": SECRET_ENV},
            "adjust": {
                "account": "main",
                "app_token": fake.app_token,
                "utc_offset": "+05:30",
                "attribution_types": ["click"],
            },
        }
    }
    doc["adjust"] = {
        "accounts": {
            "main": {"api_token": {"env": TOKEN_ENV}, "report_service_url": fake.report_service_url}
        }
    }
    doc["kpi"] = {"database_url": f"sqlite:///{tmp_path}/kpi.sqlite3"}
    doc["reconcile"] = {"lookback_days": 2, "interval_s": 600}
    config = write_config(tmp_path / "config.toml", doc)
    port = free_port()
    log_path = tmp_path / "watch.log"
    os.environ[TOKEN_ENV] = TOKEN
    args = ["reconcile", "--watch", "--port", str(port)]
    with log_path.open("wb") as log_file:
        process = spawn_postback_hub(args, config, log_file)
    try:
        text = ""

        async def published() -> bool:
            nonlocal text
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/metrics") as answer,
                ):
                    text = await answer.text()
            except aiohttp.ClientError:
                return False
            return 'postback_hub_reconcile_runs_total{app="demo",outcome="ok"} 1.0' in text

        await eventually(published, 60, what="the first cycle's gauges on /metrics")
        for n, day in enumerate(days):
            labels = f'app="demo",day="{day.isoformat()}",kpi="installs"'
            assert f"postback_hub_reconcile_adjust{{{labels}}} {7 + n}.0" in text
            assert f"postback_hub_reconcile_ours{{{labels}}} 0.0" in text
            assert f"postback_hub_reconcile_gap{{{labels}}} 1.0" in text
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await fake.stop()
        os.environ.pop(TOKEN_ENV, None)
    output = log_path.read_text()
    warnings = [line for line in output.splitlines() if "gap beyond tolerance" in line]
    assert len(warnings) == len(days)
    assert all('"no_callback"' in line for line in warnings)
    assert TOKEN not in output
