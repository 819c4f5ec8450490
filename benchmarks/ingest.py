"""Ingest: realistic Adjust GET callbacks through the receiver (durable acks) versus a bare
aiohttp handler answering 204 without Kafka, with the same load generator (wrk), same run.

Prints requests/s and p50/p99 for both and the ratio per process; then p50/p99 of the
receiver at half its maximum rate (open loop, constant rate, with vegeta: a Python
generator at that rate measured its own scheduling delays), for one process and for
the default of one process per core; the CPU the receiver uses at full speed and at
half rate, and what the bare handler costs per request at both; resident memory under
load; and the speed-up of N receiver processes over one.

    python -m benchmarks.ingest [--seconds S] [--connections C] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.common import HERE, broker, quiet_kafka_logs
from postback_hub.service.localkafka import free_port
from postback_hub.service.topics import ensure_topic

SECRET = "bench-secret"  # noqa: S105 - a throwaway value for a local benchmark
LUA = r"""
counter = 0
request = function()
  counter = counter + 1
  local path = string.format("/v1/adjust/demo?secret=%s&activity_kind=install&adid=%032x"
    .. "&idfa=6D92078A-8246-4BA4-AE5B-%012X&created_at_milli=%d&app_id=333903271"
    .. "&tracker_name=Network%%3A%%3ACampaign%%3A%%3AAdgroup%%3A%%3ACreative&country=de"
    .. "&city=M%%C3%%BCnchen&environment=production&os_name=ios&os_version=17.1"
    .. "&partner_parameters=%%7B%%22campaign%%22%%3A%%22bf%%22%%7D&ip_address=203.0.113.7",
    "SECRET", counter, counter, 1700000000000 + counter)
  return wrk.format("GET", path)
end
""".replace("SECRET", SECRET)


def wrk(url: str, seconds: int, connections: int, script: Path) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(name: str) -> float:
        value, unit = re.search(rf"\s{name}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        print(f"  warning: {non_2xx.group(1)} non-2xx answers", file=sys.stderr)
    return rate, percentile("50"), percentile("99")


VEGETA = os.environ.get("VEGETA", "vegeta")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


class CpuMeter:
    """CPU used by some processes between ``start`` and ``stop``, per second and per request."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.begin = (0.0, 0.0)
        self.cores = 0.0

    def start(self) -> None:
        self.begin = (time.perf_counter(), cpu_seconds(self.pids))

    def stop(self) -> None:
        elapsed = time.perf_counter() - self.begin[0]
        self.cores = (cpu_seconds(self.pids) - self.begin[1]) / elapsed

    def per_request_us(self, rate: float) -> float:
        return self.cores / rate * 1e6


def callback_query(n: int) -> str:
    """The query of the wrk script's callback number ``n`` (a distinct device each)."""
    return (
        f"secret={SECRET}&activity_kind=install&adid={n:032x}"
        f"&idfa=6D92078A-8246-4BA4-AE5B-{n:012X}&created_at_milli={1_700_000_000_000 + n}"
        "&app_id=333903271&tracker_name=Network%3A%3ACampaign%3A%3AAdgroup%3A%3ACreative"
        "&country=de&city=M%C3%BCnchen&environment=production&os_name=ios&os_version=17.1"
        "&partner_parameters=%7B%22campaign%22%3A%22bf%22%7D&ip_address=203.0.113.7"
    )


def constant_rate(
    url: str,
    rate: float,
    seconds: int,
    tmp: Path,
    warm_up_s: int = 3,
    ok: str = "200",
    meter: CpuMeter | None = None,
) -> tuple[float, float, int]:
    """Open-loop load at ``rate``/s with vegeta (each request is sent on schedule, however
    slow the answers are, so a stall shows in the percentiles): (p50 ms, p99 ms, errors),
    an error being any status but ``ok``. ``meter``, if given, covers the attack only.

    The first ``warm_up_s`` seconds run at the same rate and are left out of the
    percentiles: they measure vegeta opening its connections, not the receiver.
    """
    targets = tmp / "targets.txt"
    count = int(rate * (seconds + warm_up_s)) + 1000
    targets.write_text(
        "".join(f"GET {url}?{callback_query(10_000_000 + n)}\n" for n in range(count))
    )
    results = tmp / "results.bin"
    if meter is not None:
        meter.start()
    subprocess.run(
        [
            VEGETA,
            "attack",
            f"-rate={rate:.0f}/s",
            f"-duration={seconds + warm_up_s}s",
            f"-targets={targets}",
            f"-output={results}",
            "-timeout=10s",
        ],
        check=True,
    )
    if meter is not None:
        meter.stop()
    rows = list(
        csv.reader(
            subprocess.run(
                [VEGETA, "encode", "-to=csv", str(results)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
        )
    )
    # Columns: timestamp (ns), status code, latency (ns), ...
    begin = min(int(row[0]) for row in rows) + warm_up_s * 1_000_000_000
    measured = [row for row in rows if int(row[0]) >= begin]
    latencies = [int(row[2]) / 1e6 for row in measured]
    errors = sum(1 for row in measured if row[1] != ok)
    quantiles = statistics.quantiles(latencies, n=100)
    return quantiles[49], quantiles[98], errors


def rss_mb(pids: list[int]) -> float:
    worst = 0.0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                worst = max(worst, int(line.split()[1]) / 1024)
    return worst


def write_config(path: Path, bootstrap: str, topic: str, port: int, workers: int) -> None:
    # An open-loop load generator opens a connection per request it cannot send on an
    # idle one: on a busy machine that passes the default cap (a 503 is not a figure).
    path.write_text(
        f'kafka = {{bootstrap_servers = "{bootstrap}", topic = "{topic}", create_topic = false}}\n'
        f'receiver = {{host = "127.0.0.1", port = {port}, workers = {workers},'
        " max_connections = 20000}\n"
        'logging = {level = "WARNING"}\n'
        'apps = {demo = {secret = {env = "BENCH_SECRET"}}}\n'
    )


class Server:
    def __init__(self, command: list[str]) -> None:
        env = {**os.environ, "BENCH_SECRET": SECRET, "PYTHONPATH": str(HERE.parent)}
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def pids(self) -> list[int]:
        children = (
            Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        )
        return [int(pid) for pid in children] or [self.process.pid]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url) as response:
                    if response.status in (200, 204):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def main(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None or shutil.which(VEGETA) is None:
        print("wrk or vegeta is missing (make bench installs both)", file=sys.stderr)
        return 2
    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "adjust.lua"
        script.write_text(LUA)
        print(
            f"ingest benchmark: wrk -t1 -c{args.connections} -d{args.seconds}s,"
            " realistic GET callbacks"
        )

        bare_port = free_port()
        bare_url = f"http://127.0.0.1:{bare_port}"
        bare = Server([sys.executable, str(HERE / "answer_server.py"), str(bare_port), "ingest"])
        await wait_ready(f"{bare_url}/v1/adjust/demo")
        wrk(bare_url, 2, args.connections, script)  # warm-up
        bare_cpu = CpuMeter(bare.pids())
        bare_cpu.start()
        bare_rate, bare_p50, bare_p99 = wrk(bare_url, args.seconds, args.connections, script)
        bare_cpu.stop()

        results: dict[int, tuple[float, float, float, float]] = {}
        halves: dict[int, tuple[float, float, float, int, CpuMeter]] = {}
        for workers in sorted({1, args.workers}):
            topic = f"bench-ingest-{workers}-{time.time_ns()}"
            await ensure_topic({"bootstrap_servers": bootstrap}, topic, 12)
            port = free_port()
            config = Path(tmp) / f"config-{workers}.toml"
            write_config(config, bootstrap, topic, port, workers)
            server = Server(
                [sys.executable, "-m", "postback_hub", "serve", "--config", str(config)]
            )
            await wait_ready(f"http://127.0.0.1:{port}/readyz")
            await asyncio.sleep(1.0)  # every worker connected
            wrk(f"http://127.0.0.1:{port}", 2, args.connections, script)  # warm-up
            meter = CpuMeter(server.pids())
            meter.start()
            rate, p50, p99 = wrk(f"http://127.0.0.1:{port}", args.seconds, args.connections, script)
            meter.stop()
            memory = rss_mb(server.pids())
            print(
                f"receiver, {workers} process(es), at full speed: CPU {meter.cores:.2f} cores,"
                f" {meter.per_request_us(rate):.0f} us per request"
            )
            # The p99 target, for one process and for the deployed default (one per core).
            half_meter = CpuMeter(server.pids())
            p50_half, p99_half, errors = constant_rate(
                f"http://127.0.0.1:{port}/v1/adjust/demo",
                rate / 2,
                args.seconds,
                Path(tmp),
                meter=half_meter,
            )
            halves[workers] = (rate / 2, p50_half, p99_half, errors, half_meter)
            server.stop()
            results[workers] = (rate, p50, p99, memory)

        # The same bare handler at the single receiver's half rate: what a request costs
        # on this machine when requests arrive spread out rather than back to back.
        half_rate = results[1][0] / 2
        bare_half = CpuMeter(bare.pids())
        constant_rate(
            f"{bare_url}/v1/adjust/demo",
            half_rate,
            args.seconds,
            Path(tmp),
            ok="204",
            meter=bare_half,
        )
        bare.stop()

        rate1, _p50, _p99, rss1 = results[1]
        print(f"{'':<28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>8}")
        print(
            f"{'bare aiohttp 204 (1 proc)':<28} {bare_rate:>9.0f} {bare_p50:>8.2f} {bare_p99:>8.2f}"
        )
        for workers, (rate, p50, p99, memory) in sorted(results.items()):
            label = f"receiver, {workers} process(es)"
            print(f"{label:<28} {rate:>9.0f} {p50:>8.2f} {p99:>8.2f} {memory:>8.0f}")
        ratio = rate1 / bare_rate
        verdict = "ok" if ratio >= 0.5 else "BELOW"
        print(f"ratio receiver/bare per process: {ratio:.2f} (target >= 0.5) {verdict}")
        for workers, (rate, p50, p99, errors, meter) in sorted(halves.items()):
            verdict = "ok" if p99 <= 20 and errors == 0 else "BELOW"
            print(
                f"receiver, {workers} process(es), at half its max rate ({rate:.0f}/s, open loop,"
                f" after a warm-up): p50 {p50:.1f} ms, p99 {p99:.1f} ms (target <= 20 ms)"
                f" {verdict}, {errors} errors; CPU {meter.cores:.2f} cores,"
                f" {meter.per_request_us(rate):.0f} us per request"
            )
        print(
            f"bare handler CPU per request: {bare_cpu.per_request_us(bare_rate):.0f} us at full"
            f" speed, {bare_half.per_request_us(half_rate):.0f} us at {half_rate:.0f}/s"
        )
        print(f"resident memory per receiver process under load: {rss1:.0f} MB (target <= 150)")
        if args.workers > 1:
            speedup = results[args.workers][0] / rate1
            print(
                f"scaling: {args.workers} processes vs 1: x{speedup:.2f} on {os.cpu_count()} cores"
            )
        return 0


def cli() -> None:
    quiet_kafka_logs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    raise SystemExit(asyncio.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
