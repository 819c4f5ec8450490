"""Side by side with the peers users compare us with, measured in the same run.

Ingest: the same wrk load (``wrk -t1 -c64 -d10s``, the ingest benchmark's Adjust
URL) against a bare aiohttp 204 (no Kafka), the naive aiohttp + aiokafka peer
(``naive_receiver.py``), Benthos 4.27 (``benthos/ingest.yaml``, both cores) and the
receiver with one and two workers; then 1,000 callbacks/s (vegeta, open loop) for
the p99 and the CPU per callback at a spread-out rate. CPU is that of each
server's process tree, read from ``/proc``.

Forwarding: the same records on Kafka, the same 64 requests in flight to the same
counting partner process: a bare aiohttp loop (pre-rendered requests, no Kafka),
Benthos (``benthos/forward.yaml``), the forwarding benchmark's reference loop and
postback-hub's consumer runtime. Every contender is timed alike, by the partner,
from its first answer to its last; CPU over that window (the benchmark process
for the Python loops, the Benthos process for Benthos).

Contenders alternate within each round; medians of the rounds are printed with
the ratios of the issue's targets. Figures only, no verdicts: on a shared
machine a ratio is the figure to read. A peer that cannot run (Benthos not
built) is printed as missing.

    python -m benchmarks.peers [--rounds R] [--seconds S] [--part ingest forwarding]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import uvloop

from benchmarks import forwarding
from benchmarks.common import HERE, broker, partner_process, quiet_kafka_logs
from benchmarks.ingest import (
    LUA,
    SECRET,
    VEGETA,
    CpuMeter,
    callback_query,
    constant_rate,
    cpu_seconds,
    wait_ready,
    write_config,
    wrk,
)
from postback_hub.consumers.delivery import HttpRequest
from postback_hub.service.localkafka import free_port
from postback_hub.service.record import CallbackRecord
from postback_hub.service.settings import Settings
from postback_hub.service.topics import ensure_topic
from postback_hub.service.tuning import tune_gc

BENTHOS_VERSION = "v4.27.0"
BENTHOS = Path(
    os.environ.get("BENTHOS", HERE.parent / "deploy/.cache/bin" / f"benthos-{BENTHOS_VERSION}")
)
BENTHOS_LOG = HERE.parent / "deploy" / ".cache" / "benthos-build.log"
SPREAD_RATE = 1000  # callbacks/s for the p99 and the CPU at a spread-out rate


def benthos_missing() -> str | None:
    """Why Benthos cannot run, or None."""
    if BENTHOS.is_file() and os.access(BENTHOS, os.X_OK):
        return None
    reason = f"not built ({BENTHOS} is absent"
    if BENTHOS_LOG.is_file():
        lines = BENTHOS_LOG.read_text(errors="replace").strip().splitlines()
        reason += f"; the build said: {lines[-1] if lines else 'nothing'}"
    return reason + ")"


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a supervisor and its workers)."""
    tree = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            tree.extend(process_tree(int(child)))
    return tree


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (every process), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# --- ingest -------------------------------------------------------------------------


@dataclass
class Contender:
    """One server under the ingest load: how to start it, and what a good answer is."""

    name: str
    command: list[str]
    ok: str = "200"
    env: dict[str, str] = field(default_factory=dict)
    missing: str | None = None
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    cwd: Path = HERE.parent


@dataclass
class IngestFigures:
    rate: float  # req/s under wrk
    cpu_us: float  # CPU per request under wrk
    p99_ms: float  # at SPREAD_RATE
    spread_cpu_us: float  # CPU per request at SPREAD_RATE
    rest_cores: float  # what the rest of the machine used during the wrk run


def ingest_contenders(
    bootstrap: str, tmp: Path, compare: list[Path] | None = None
) -> list[Contender]:
    """The five of the issue, in this order, then the receiver of each ``compare`` checkout
    (one worker: a lever's gain measured in the same run as the code without it)."""
    python = sys.executable
    contenders = []

    def port() -> int:
        return free_port()

    p = port()
    contenders.append(
        Contender(
            "aiohttp answering 204, no Kafka",
            [python, str(HERE / "answer_server.py"), str(p), "ingest"],
            ok="204",
            url=f"http://127.0.0.1:{p}",
        )
    )
    p = port()
    contenders.append(
        Contender(
            "naive aiohttp + aiokafka",
            [python, str(HERE / "naive_receiver.py"), str(p), bootstrap, f"bench-naive-{p}"],
            url=f"http://127.0.0.1:{p}",
        )
    )
    p = port()
    contenders.append(
        Contender(
            "Benthos 4.27, 2 cores",
            [str(BENTHOS), "-c", str(HERE / "benthos" / "ingest.yaml")],
            env={
                "PEER_ADDRESS": f"127.0.0.1:{p}",
                "KAFKA_BROKERS": bootstrap,
                "KAFKA_TOPIC": f"bench-benthos-{p}",
            },
            missing=benthos_missing(),
            url=f"http://127.0.0.1:{p}",
        )
    )
    for workers in (1, 2):
        p = port()
        config = tmp / f"receiver-{workers}.toml"
        write_config(config, bootstrap, f"bench-receiver-{p}", p, workers)
        contenders.append(
            Contender(
                f"postback-hub receiver, {workers} worker{'s' if workers > 1 else ''}",
                [python, "-m", "postback_hub", "serve", "--config", str(config)],
                url=f"http://127.0.0.1:{p}",
            )
        )
    for checkout in compare or []:
        p = port()
        config = tmp / f"receiver-{checkout.name}.toml"
        write_config(config, bootstrap, f"bench-receiver-{p}", p, 1)
        contenders.append(
            Contender(
                f"receiver of {checkout.name}, 1 worker",
                [python, "-m", "postback_hub", "serve", "--config", str(config)],
                env={"PYTHONPATH": str(checkout)},
                url=f"http://127.0.0.1:{p}",
                cwd=checkout,
            )
        )
    return contenders


def topic_of(contender: Contender) -> str | None:
    """The Kafka topic a contender writes, to create beforehand (None: it writes none)."""
    if "KAFKA_TOPIC" in contender.env:
        return contender.env["KAFKA_TOPIC"]
    if contender.command[-1].startswith("bench-naive-"):
        return contender.command[-1]
    if "--config" in contender.command:
        text = Path(contender.command[-1]).read_text()
        return text.split('topic = "', 1)[1].split('"', 1)[0]
    return None


async def start(contender: Contender, bootstrap: str, logs: Path) -> None:
    topic = topic_of(contender)
    if topic is not None:
        await ensure_topic({"bootstrap_servers": bootstrap}, topic, 12)
    env = {
        **os.environ,
        "BENCH_SECRET": SECRET,
        "PYTHONPATH": str(HERE.parent),
        **contender.env,
    }
    contender.process = spawn(
        contender.command, env, logs / f"{uuid.uuid4().hex[:8]}.log", contender.cwd
    )
    await wait_ready(f"{contender.url}/v1/adjust/demo?{callback_query(1)}")
    await asyncio.sleep(1.0)  # every worker connected


def spawn(
    command: list[str], env: dict[str, str], log: Path, cwd: Path = HERE.parent
) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=cwd)


def stop(contender: Contender) -> None:
    if contender.process is None:
        return
    contender.process.terminate()
    try:
        contender.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        contender.process.kill()
        contender.process.wait()
    contender.process = None


def measure_ingest(
    contender: Contender, seconds: int, connections: int, script: Path, tmp: Path
) -> IngestFigures:
    assert contender.process is not None
    pids = process_tree(contender.process.pid)
    wrk(contender.url, 2, connections, script)  # warm-up
    meter = CpuMeter(pids)
    machine = machine_busy_seconds()
    meter.start()
    rate, _p50, _p99 = wrk(contender.url, seconds, connections, script)
    meter.stop()
    elapsed = time.perf_counter() - meter.begin[0]
    rest = (machine_busy_seconds() - machine) / elapsed - meter.cores
    spread = CpuMeter(pids)
    _p50, p99, errors = constant_rate(
        f"{contender.url}/v1/adjust/demo",
        SPREAD_RATE,
        seconds,
        tmp,
        ok=contender.ok,
        meter=spread,
    )
    if errors:
        print(f"  warning: {contender.name}: {errors} answers other than {contender.ok}")
    return IngestFigures(
        rate, meter.per_request_us(rate), p99, spread.per_request_us(SPREAD_RATE), rest
    )


def median_ingest(rounds: list[IngestFigures]) -> IngestFigures:
    def med(get: Callable[[IngestFigures], float]) -> float:
        return statistics.median(get(r) for r in rounds)

    return IngestFigures(
        med(lambda r: r.rate),
        med(lambda r: r.cpu_us),
        med(lambda r: r.p99_ms),
        med(lambda r: r.spread_cpu_us),
        med(lambda r: r.rest_cores),
    )


def ratio(ours: object | None, theirs: object | None, figure: str) -> str:
    """``figure`` of ours over theirs, or why there is none."""
    if ours is None or theirs is None:
        return "n/a (a contender is missing)"
    return f"{getattr(ours, figure) / getattr(theirs, figure):.2f}"


async def ingest(args: argparse.Namespace, bootstrap: str, tmp: Path) -> None:
    script = tmp / "adjust.lua"
    script.write_text(LUA)
    contenders = ingest_contenders(bootstrap, tmp, args.compare_checkout)
    if args.contenders:
        for contender in contenders:
            if not any(part in contender.name for part in args.contenders):
                contender.missing = contender.missing or "not run (--contenders)"
    figures: dict[str, list[IngestFigures]] = {c.name: [] for c in contenders}
    print(
        f"ingest: wrk -t1 -c{args.connections} -d{args.seconds}s, then {SPREAD_RATE}/s (vegeta),"
        f" {args.rounds} alternating rounds, medians; CPU of each server's process tree"
    )
    try:
        for contender in contenders:
            if contender.missing is None:
                await start(contender, bootstrap, tmp)
        runnable = [c for c in contenders if c.missing is None]
        for round_ in range(args.rounds):
            # A different contender goes first each round: no one always gets the
            # freshest broker or the quietest seconds.
            shift = round_ % len(runnable)
            for contender in runnable[shift:] + runnable[:shift]:
                figures[contender.name].append(
                    await asyncio.to_thread(
                        measure_ingest, contender, args.seconds, args.connections, script, tmp
                    )
                )
    finally:
        for contender in contenders:
            stop(contender)

    medians = {name: median_ingest(rounds) for name, rounds in figures.items() if rounds}
    print(
        f"{'ingest contender':<36} {'req/s':>8} {'CPU us/req':>11} {'p99 ms @1k/s':>13}"
        f" {'CPU us/req @1k/s':>17} {'rest of machine':>16}"
    )
    for contender in contenders:
        if contender.missing is not None:
            label = "" if contender.missing.startswith("not run") else "MISSING: "
            print(f"{contender.name:<36} {label}{contender.missing}")
            continue
        m = medians[contender.name]
        print(
            f"{contender.name:<36} {m.rate:>8.0f} {m.cpu_us:>11.0f} {m.p99_ms:>13.2f}"
            f" {m.spread_cpu_us:>17.0f} {m.rest_cores:>11.2f} cores"
        )
    for contender in contenders:
        if contender.missing is None:
            rounds = figures[contender.name]
            print(
                f"  rounds, {contender.name}: req/s {[round(r.rate) for r in rounds]},"
                f" CPU us/req {[round(r.cpu_us) for r in rounds]}"
            )

    def get(index: int) -> IngestFigures | None:
        return medians.get(contenders[index].name)

    naive, benthos, one, two = get(1), get(2), get(3), get(4)
    print("targets (ratios of contenders measured above):")
    print(
        "  receiver CPU per callback / naive peer's, full speed:"
        f" {ratio(one, naive, 'cpu_us')} (target <= 1.2)"
    )
    print(
        f"  receiver CPU per callback / naive peer's, at {SPREAD_RATE}/s:"
        f" {ratio(one, naive, 'spread_cpu_us')} (target <= 1.0);"
        f" receiver p99 {one.p99_ms if one else float('nan'):.2f} ms (target <= 2 ms)"
    )
    print(
        "  whole machine, receiver 2 workers req/s / Benthos's:"
        f" {ratio(two, benthos, 'rate')} (target >= 0.9)"
    )


# --- forwarding ---------------------------------------------------------------------


@dataclass
class ForwardFigures:
    rate: float  # deliveries/s, as the partner saw them
    cpu_us: float  # CPU per delivery over the same window


class CpuTrace:
    """(wall time, CPU seconds) sampled every few milliseconds by a task of this loop,
    so the CPU over any window the partner reports can be read off afterwards."""

    def __init__(self, cpu: Callable[[], float]) -> None:
        self.cpu = cpu
        self.samples: list[tuple[float, float]] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append((time.time(), self.cpu()))
            await asyncio.sleep(0.005)

    def __enter__(self) -> CpuTrace:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        self.samples.append((time.time(), self.cpu()))

    def at(self, when: float) -> float:
        """CPU seconds at wall time ``when``, interpolated between samples."""
        before = max((s for s in self.samples if s[0] <= when), default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= when), default=self.samples[-1])
        if after[0] == before[0]:
            return before[1]
        share = (when - before[0]) / (after[0] - before[0])
        return before[1] + share * (after[1] - before[1])


async def partner_stats(session: aiohttp.ClientSession, partner: str) -> dict[str, float]:
    async with session.get(f"{partner}/__stats") as response:
        stats: dict[str, float] = await response.json()
        return stats


async def timed(
    partner: str, cpu: Callable[[], float], run: Callable[[], Awaitable[None]]
) -> ForwardFigures:
    """Run one forwarder; its rate and CPU per delivery between the partner's first
    answer and its last."""
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{partner}/__stats"):
            pass
        with CpuTrace(cpu) as trace:
            await run()
            await asyncio.sleep(0.02)  # a sample after the last answer
        stats = await partner_stats(session, partner)
    window = stats["last"] - stats["first"]
    deliveries = stats["count"] - 1
    return ForwardFigures(
        deliveries / window, (trace.at(stats["last"]) - trace.at(stats["first"])) / deliveries * 1e6
    )


class ChildCpu:
    """The CPU of a child process while it runs (its last reading once it has ended)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.last = 0.0

    def __call__(self) -> float:
        if self.pid is not None:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                self.last = cpu_seconds([self.pid])
        return self.last


async def benthos_forward(
    bootstrap: str, partner: str, topic: str, expected: int, cpu: ChildCpu
) -> None:
    """Benthos from ``topic`` to the partner until the partner has ``expected`` answers."""
    env = {
        **os.environ,
        "KAFKA_BROKERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP": f"benthos-{topic}",
        "PARTNER_URL": partner,
    }
    process = spawn(
        [str(BENTHOS), "-c", str(HERE / "benthos" / "forward.yaml")], env, Path(os.devnull)
    )
    cpu.pid = process.pid
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 300
            while (await partner_stats(session, partner))["count"] < expected:
                if process.poll() is not None:
                    raise RuntimeError(f"Benthos exited with {process.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError("Benthos did not deliver every record in 300 s")
                await asyncio.sleep(0.05)
    finally:
        cpu()  # a reaped process's CPU is gone from /proc
        cpu.pid = None
        process.terminate()
        process.wait()


FORWARDERS = (
    "bare aiohttp loop, no Kafka",
    "Benthos 4.27",
    "reference loop",
    "postback-hub consume",
)
Run = tuple[str, Callable[[], float], Callable[[], Awaitable[None]]]


def forwarding_runs(
    args: argparse.Namespace,
    bootstrap: str,
    partner: str,
    records: list[CallbackRecord],
    requests: list[HttpRequest],
) -> list[Run]:
    """The contenders of one round: (name, its CPU clock, the run), Benthos if built."""

    def settings(tag: str) -> Settings:
        topic = f"bench-{tag}-{uuid.uuid4().hex[:8]}"
        return forwarding.settings_for(bootstrap, topic, partner, args.concurrency)

    async def bare() -> None:
        await forwarding.bare_loop(requests, args.concurrency)

    benthos_cpu = ChildCpu()

    async def benthos() -> None:
        topic = settings("benthos")
        await forwarding.put_on_kafka(topic, records)
        await benthos_forward(bootstrap, partner, topic.kafka.topic, len(records), benthos_cpu)
        await forwarding.delete_topics(bootstrap, [topic.kafka.topic])

    async def reference() -> None:
        await forwarding.kafka_fed_rate(
            settings("reference"), "module", records, len(requests), args.concurrency
        )

    async def consume() -> None:
        await forwarding.runtime_rate(settings("runtime"), "module", records, len(requests))

    own = time.process_time
    runs: list[Run] = [
        (FORWARDERS[0], own, bare),
        (FORWARDERS[1], benthos_cpu, benthos),
        (FORWARDERS[2], own, reference),
        (FORWARDERS[3], own, consume),
    ]
    return [run for run in runs if run[0] != FORWARDERS[1] or benthos_missing() is None]


async def forward(args: argparse.Namespace, bootstrap: str) -> None:
    tune_gc()  # as the consume command does; applies to every Python loop
    figures: dict[str, list[ForwardFigures]] = {name: [] for name in FORWARDERS}
    records = forwarding.make_records(args.messages)
    with partner_process("counting") as partner:
        print(
            f"forwarding, module partner: {args.messages} activities, {args.concurrency} in"
            f" flight, {args.rounds} alternating rounds, medians; timed by the partner"
        )
        warm = forwarding.settings_for(
            bootstrap, f"bench-warm-{uuid.uuid4().hex[:8]}", partner, args.concurrency
        )
        await forwarding.runtime_rate(warm, "module", records[:2000], 2000)
        requests = forwarding.sendable(forwarding.build_destination(warm, "module"), records)
        await forwarding.bare_loop(requests[:2000], args.concurrency)  # warm-up
        for round_ in range(args.rounds):
            runs = forwarding_runs(args, bootstrap, partner, records, requests)
            shift = round_ % len(runs)
            for name, cpu, run in runs[shift:] + runs[:shift]:
                figures[name].append(await timed(partner, cpu, run))

    print(f"{'forwarding contender':<36} {'deliveries/s':>13} {'CPU us/delivery':>16}")
    medians: dict[str, ForwardFigures] = {}
    for name in FORWARDERS:
        rounds = figures[name]
        if not rounds:
            print(f"{name:<36} MISSING: {benthos_missing()}")
            continue
        m = medians[name] = ForwardFigures(
            statistics.median(r.rate for r in rounds), statistics.median(r.cpu_us for r in rounds)
        )
        print(f"{name:<36} {m.rate:>13.0f} {m.cpu_us:>16.0f}")
    for name in FORWARDERS:
        if figures[name]:
            print(
                f"  rounds, {name}: {[round(r.rate) for r in figures[name]]} deliveries/s,"
                f" {[round(r.cpu_us) for r in figures[name]]} us"
            )
    ours = medians.get(FORWARDERS[3])
    benthos, reference = medians.get(FORWARDERS[1]), medians.get(FORWARDERS[2])
    print("targets (ratios of contenders measured above):")
    print(
        "  consume CPU per delivery / Benthos's:"
        f" {ratio(ours, benthos, 'cpu_us')} (target <= 1.25);"
        " / the reference loop's:"
        f" {ratio(ours, reference, 'cpu_us')} (target < 1)"
    )


async def main(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None or shutil.which(VEGETA) is None:
        print("wrk or vegeta is missing (make bench installs both)", file=sys.stderr)
        return 2
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start"
        " (the rest-of-machine column: every other process, the broker and wrk included)"
    )
    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        if "ingest" in args.part:
            await ingest(args, bootstrap, Path(tmp))
        if "forwarding" in args.part:
            await forward(args, bootstrap)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


def cli() -> None:
    quiet_kafka_logs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--part", nargs="+", default=["ingest", "forwarding"])
    parser.add_argument(
        "--contenders", nargs="+", help="run only ingest contenders whose name has one of these"
    )
    parser.add_argument(
        "--compare-checkout",
        nargs="+",
        type=Path,
        help="also run the receiver of these source trees (e.g. git archive of an older commit)",
    )
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    raise SystemExit(uvloop.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
