"""Who may listen on the receiver's port: one deployment, never two by accident.

Receiver workers bind with ``SO_REUSEPORT`` so that they can share a port, and the
kernel lets *any* process of the same user join them. A second instance with other
secrets would then answer half of Adjust's callbacks with 401, which Adjust never
retries. So before binding, ``postback-hub run``/``serve`` claims the port:

- a claim file per address (``<run dir>/receiver-<host>-<port>.json``) records the
  deployment and the processes serving it; the check runs under an exclusive
  ``flock`` so two instances starting at once are decided one after the other;
- the port is probed by binding it *without* ``SO_REUSEPORT``: that fails while
  anything at all listens there.

A deployment is ``receiver.deployment`` when set, else the configuration file's
absolute path: the same file started twice joins (more capacity, or an overlapping
restart); another file, or another program on the port, stops the start with one
line. The run dir is ``$POSTBACK_HUB_RUN_DIR``, else ``$XDG_RUNTIME_DIR/postback-hub``,
else ``/tmp/postback-hub-<uid>``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from enum import Enum
from pathlib import Path


class PortTaken(Exception):
    """The port is served by something this instance must not share it with (one line)."""


class Verdict(Enum):
    CLAIM = "claim"  # nothing listens: the port is ours
    JOIN = "join"  # our own deployment serves it: share it
    OTHER_DEPLOYMENT = "other_deployment"
    OTHER_PROGRAM = "other_program"


def deployment_id(config: Path, explicit: str | None) -> str:
    """The name two instances must share to share a port."""
    if explicit:
        return explicit
    digest = hashlib.sha256(str(config.resolve()).encode()).hexdigest()[:12]
    return f"config-{digest}"


def decide(listening: bool, claimed_by: str | None, live_pids: int, ours: str) -> Verdict:
    """Whether to claim, join or refuse a port. Pure.

    ``claimed_by`` is the deployment recorded in the claim file and ``live_pids`` how
    many of its recorded processes still run.
    """
    if live_pids and claimed_by is not None:
        return Verdict.JOIN if claimed_by == ours else Verdict.OTHER_DEPLOYMENT
    return Verdict.OTHER_PROGRAM if listening else Verdict.CLAIM


def run_dir() -> Path:
    if explicit := os.environ.get("POSTBACK_HUB_RUN_DIR"):
        return Path(explicit)
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime) / "postback-hub"
    return Path("/tmp") / f"postback-hub-{os.getuid()}"  # noqa: S108 - private, mode 0700


def port_in_use(host: str, port: int) -> bool:
    """Whether anything listens on host:port (a bind without SO_REUSEPORT fails)."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        # Connections in TIME_WAIT from an earlier run do not count as a listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _alive(pid: int) -> bool:
    """A recorded process still runs and is ours (a reused pid is not)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"postback" in command


@contextlib.contextmanager
def claim_port(host: str, port: int, deployment: str) -> Iterator[Verdict]:
    """Claim or join ``host:port`` for ``deployment`` while the block runs; raise
    :class:`PortTaken` when another deployment or program has it."""
    if port == 0:  # a port of the kernel's choosing is never shared
        yield Verdict.CLAIM
        return
    directory = run_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    safe_host = "".join(c if c.isalnum() else "_" for c in host)
    path = directory / f"receiver-{safe_host}-{port}.json"
    pid = os.getpid()
    with (directory / f"receiver-{safe_host}-{port}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            recorded = _read(path)
            pids = [p for p in _pids(recorded) if _alive(p)]
            claimed_by = recorded.get("deployment")
            verdict = decide(
                port_in_use(host, port),
                claimed_by if isinstance(claimed_by, str) else None,
                len(pids),
                deployment,
            )
            if verdict is Verdict.OTHER_DEPLOYMENT:
                raise PortTaken(
                    f"port {port} on {host} is served by another postback-hub deployment "
                    f"(pid {pids[0]}); stop it, use another receiver.port, or give both "
                    "the same receiver.deployment to share the port on purpose"
                )
            if verdict is Verdict.OTHER_PROGRAM:
                raise PortTaken(
                    f"port {port} on {host} is in use by another program; "
                    "free it or set another receiver.port (--port)"
                )
            if verdict is Verdict.CLAIM:
                pids = []
            _write(path, {"deployment": deployment, "pids": [*pids, pid]})
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        yield verdict
    finally:
        with (directory / f"receiver-{safe_host}-{port}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            recorded = _read(path)
            left = [p for p in _pids(recorded) if p != pid and _alive(p)]
            if left:
                _write(path, {**recorded, "pids": left})
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _read(path: Path) -> dict[str, object]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _pids(recorded: dict[str, object]) -> list[int]:
    pids = recorded.get("pids")
    return [p for p in pids if isinstance(p, int)] if isinstance(pids, list) else []


def _write(path: Path, document: dict[str, object]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document), encoding="utf-8")
    temporary.replace(path)
