"""The process supervisor of ``postback-hub run`` and ``serve``: receiver workers and
one consumer per destination, each its own process, restarted when one dies.

It sits above both layers (it starts the receiver's workers and the consumers),
which is why it is not part of ``service``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from postback_hub.consumers.process import EXIT_HALTED
from postback_hub.consumers.registry import load_settings
from postback_hub.service.logs import configure_logging
from postback_hub.service.server import EXIT_PORT_IN_USE

log = logging.getLogger("postback_hub.supervisor")


@dataclass(frozen=True, slots=True)
class Child:
    """One process of a deployment. Receiver workers share a port, and so their metrics."""

    command: list[str]
    shares_port: bool


def child_commands(
    config: Path,
    workers: int,
    destinations: list[str],
    *,
    kpi_api: bool = False,
    reconcile: bool = False,
) -> list[Child]:
    """The processes of a deployment: receiver workers, one consumer per destination, the
    KPI API when a KPI sink runs, and the reconciliation watch when ``[reconcile]`` is on."""
    base = [sys.executable, "-m", "postback_hub"]
    children = [Child([*base, "worker", "--config", str(config)], True) for _ in range(workers)]
    children += [
        Child([*base, "consume", name, "--config", str(config)], False) for name in destinations
    ]
    if kpi_api:
        children.append(Child([*base, "kpi", "serve", "--config", str(config)], False))
    if reconcile:
        children.append(Child([*base, "reconcile", "--watch", "--config", str(config)], False))
    return children


def supervise(config: Path, plan: list[Child], environment: Mapping[str, str] | None = None) -> int:
    """Start every planned child process; restart any that dies; stop all on SIGTERM.
    ``environment`` is added to every child's (the address overrides of the command).
    """
    settings = load_settings(config)
    configure_logging(settings.logging.level)
    metrics_dir = tempfile.mkdtemp(prefix="postback-hub-metrics-")
    # Processes behind one port answer /metrics in turn: they write to one directory.
    base = {**os.environ, **(environment or {})}
    env = {**base, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    stopping = False

    def spawn(child: Child) -> subprocess.Popen[bytes]:
        # Its own session: a terminal's Ctrl-C reaches only the supervisor, which then
        # stops each child once with SIGTERM (a second signal mid-shutdown would cut
        # the child's clean stop short and make its exit status non-zero).
        return subprocess.Popen(
            child.command,
            env=env if child.shares_port else base,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    children: list[subprocess.Popen[bytes]] = []
    halted: set[int] = set()
    port_lost = False
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children.extend(spawn(child) for child in plan)
    log.info("supervisor started", extra={"processes": len(plan)})
    try:
        while not stopping:
            time.sleep(0.2)
            for index, child in enumerate(children):
                if index in halted:
                    continue
                if child.poll() == EXIT_HALTED:
                    # Stopped by its dead-letter limit: a restart would dead-letter more.
                    log.error(
                        "consumer stopped by its dead-letter limit; not restarting it",
                        extra={"pid": child.pid},
                    )
                    halted.add(index)
                    continue
                if child.poll() == EXIT_PORT_IN_USE and plan[index].shares_port:
                    # Taken by another program: restarting would fail the same way.
                    log.error("receiver port in use by another program; stopping")
                    on_signal(signal.SIGTERM, None)
                    port_lost = True
                    break
                if child.poll() is not None and not stopping:
                    log.error(
                        "child process exited; restarting",
                        extra={"pid": child.pid, "returncode": child.returncode},
                    )
                    _mark_dead(child.pid)
                    time.sleep(0.5)
                    children[index] = spawn(plan[index])
        grace = settings.receiver.shutdown_drain_s + settings.receiver.shutdown_timeout_s + 10
        deadline = time.monotonic() + grace
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("child process did not stop in time; killing", extra={"pid": child.pid})
                child.kill()
                child.wait()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        # Stopped: a Ctrl-C pressed again now must not kill the exiting interpreter
        # (Python restores the default disposition as it finalises, and the exit status
        # would then be "killed by SIGINT" after a clean stop).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0 if not port_lost and all(child.returncode == 0 for child in children) else 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the supervisor dies, however it dies,
    so a SIGKILLed supervisor leaves no orphaned workers holding the port (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _mark_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    with contextlib.suppress(Exception):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
