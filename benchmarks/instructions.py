"""Instructions per call of the receiver's pure steps, counted by valgrind's callgrind.

Timings on a shared machine drift by tens of percent; instruction counts do not.
Each case runs twice under callgrind, once with its setup only and once with the
statement repeated N times, and prints the difference over N: the instructions one
call costs, interpreter included. Cases come in pairs (the library's way, ours), so a
lever's gain is read in the same run. An async case runs its statement in a
coroutine on uvloop, as the receiver does.

    python -m benchmarks.instructions [--calls N] [CASE ...]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

# An answered produce: a future the loop resolves at once, awaited within the bound.
_ACK = "ack = loop.create_future(); loop.call_soon(ack.set_result, None)\n"

_MULTIPROCESS = "import os, tempfile\nos.environ['PROMETHEUS_MULTIPROC_DIR'] = tempfile.mkdtemp()\n"

CASES: dict[str, tuple[str, str]] = {
    "partition: aiokafka DefaultPartitioner": (
        "from aiokafka.partitioner import DefaultPartitioner\n"
        "p = DefaultPartitioner(); parts = list(range(12)); key = b'demo:' + b'7' * 32",
        "p(key, parts, parts)",
    ),
    "partition: KeyPartitioner (compiled murmur2)": (
        "from postback_hub.service.partitioner import KeyPartitioner\n"
        "p = KeyPartitioner(); parts = list(range(12)); key = b'demo:' + b'7' * 32",
        "p(key, parts, parts)",
    ),
    "async bounded wait: asyncio.timeout per request": (
        "import asyncio",
        _ACK + "async with asyncio.timeout(5.0):\n    await ack",
    ),
    "async bounded wait: Deadlines (one timer)": (
        "from postback_hub.service.deadlines import Deadlines\ndeadlines = Deadlines(5.0)",
        _ACK + "with deadlines.bound():\n    await ack",
    ),
    # With two workers (the default) prometheus_client writes a shared file per update.
    "async answer counts: prometheus_client per request (2 workers)": (
        _MULTIPROCESS + "from prometheus_client import Counter, Gauge\n"
        "answers = Counter('a', 'a', ['app', 'kind', 'status']).labels('demo', 'install', '200')\n"
        "inflight = Gauge('i', 'i', multiprocess_mode='livesum')",
        "inflight.inc(); inflight.dec(); answers.inc()",
    ),
    "async answer counts: ReceiverMetrics, folded (2 workers)": (
        _MULTIPROCESS + "from postback_hub.service.metrics import ReceiverMetrics\n"
        "metrics = ReceiverMetrics()",
        "metrics.inflight.inc(); metrics.inflight.dec(); metrics.answered('demo', 'install', 200)",
    ),
}


def instructions(name: str, setup: str, statement: str, calls: int) -> int:
    """Instructions callgrind counts for ``setup`` then ``statement`` run ``calls`` times."""
    body = f"for _ in range({calls}):\n" + textwrap.indent(statement, "    ")
    if name.startswith("async "):
        body = (
            "import asyncio, uvloop\nasync def main():\n    loop = asyncio.get_running_loop()\n"
            + textwrap.indent(body, "    ")
            + "\nuvloop.run(main())"
        )
    program = f"{setup}\n{body}\n"
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            program,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    ).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("case", nargs="*", help="substrings of case names (default: all)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is missing (apt-get install valgrind)", file=sys.stderr)
        return 2
    print(f"instructions per call (callgrind, {args.calls} calls minus none)")
    for name, (setup, statement) in CASES.items():
        if args.case and not any(part in name for part in args.case):
            continue
        base = instructions(name, setup, statement, 0)
        total = instructions(name, setup, statement, args.calls)
        print(f"  {name:<56} {(total - base) / args.calls:>10,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
