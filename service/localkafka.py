"""Local single-node Apache Kafka broker for development, the test suite and operators.

The broker is the real Kafka (KRaft, broker and controller in one JVM) rather than a
fake, so tests exercise the same acknowledgement, durability and failure behaviour as
production. Its jars come from Maven Central via ``deploy/kafka/pom.xml`` and are
cached once per checkout (:func:`ensure_jars`); after that starting a broker needs no
network. :class:`LocalKafka` renders ``deploy/kafka/server.properties.template`` into
a data directory, formats the storage on first use, runs the JVM in its own session
and waits until a metadata request lists the broker. All state lives in that data
directory (``server.properties``, ``server.log``, ``broker.pid``, ``broker.json`` and
the partition data under ``data/``), so another process can find, inspect and stop a
broker it did not start (:meth:`LocalKafka.from_data_dir`).

:func:`register_cli` adds ``postback-hub kafka up|down|status|fetch|run``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import contextvars
import fcntl
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from string import Template
from types import FrameType
from typing import Any, TypeVar

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

__all__ = [
    "KAFKA_VERSION",
    "LocalKafka",
    "ensure_jars",
    "free_port",
    "register_cli",
    "wait_ready_async",
]

KAFKA_VERSION = "3.9.1"

# The POM and templates ship inside the package (``localkafka_files`` links to
# deploy/kafka in a checkout), so an installed wheel finds them too.
_DEPLOY_DIR = Path(__file__).resolve().parent / "localkafka_files"
_POM = _DEPLOY_DIR / "pom.xml"
_TEMPLATE = _DEPLOY_DIR / "server.properties.template"
_LOG4J = _DEPLOY_DIR / "log4j.properties"


def _state_root(kind: str, xdg_variable: str, fallback: str) -> Path:
    """Where jars (``.cache``) and broker data (``.data``) go: ``deploy/`` in a checkout,
    else the user's XDG directories (an installed wheel has no ``deploy/``)."""
    checkout = Path(__file__).resolve().parents[1] / "deploy"
    if (checkout / "kafka" / "pom.xml").is_file():
        return checkout / kind
    base = os.environ.get(xdg_variable) or str(Path.home() / fallback)
    return Path(base) / "postback-hub"


_DEFAULT_CACHE = (
    _state_root(".cache", "XDG_CACHE_HOME", ".cache") / f"kafka-{KAFKA_VERSION}" / "lib"
)
_DEFAULT_DATA_DIR = _state_root(".data", "XDG_DATA_HOME", ".local/share") / "kafka"
_CACHE_ENV = "POSTBACK_HUB_KAFKA_CACHE"
_MARKER = ".complete"
_KAFKA_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
_HOST = "127.0.0.1"
_LOG_TAIL_LINES = 40

_T = TypeVar("_T")


# --------------------------------------------------------------------------- jars


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Return a directory holding the broker's jars, fetching them with Maven if needed.

    The directory is ``cache_dir``, else ``$POSTBACK_HUB_KAFKA_CACHE``, else
    ``<repo>/deploy/.cache/kafka-<version>/lib``. A complete directory (one with the
    marker written after a successful copy) is returned without running anything.
    """
    if cache_dir is None:
        env = os.environ.get(_CACHE_ENV)
        cache_dir = Path(env) if env else _DEFAULT_CACHE
    lib = cache_dir.expanduser().resolve()
    if _jars_complete(lib):
        return lib

    lib.parent.mkdir(parents=True, exist_ok=True)
    with _locked(lib.parent / f".{lib.name}.lock"):
        # Whoever held the lock before us may have just finished the same download.
        if _jars_complete(lib):
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                f"Kafka jars are not cached in {lib} and Maven ('mvn') is not on PATH; "
                f"install Maven once to fetch them (or point {_CACHE_ENV} at a cache "
                "filled by `postback-hub kafka fetch` elsewhere)."
            )
        # Copy into a sibling temp dir and rename it into place, so a crash or a
        # failed download can never leave a half-filled directory that looks usable.
        staging = Path(tempfile.mkdtemp(prefix=f".{lib.name}.", dir=lib.parent))
        try:
            # mkdtemp makes the directory private; the cache may be shared (CI, team box).
            staging.chmod(0o755)
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(_POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ]
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=1800, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"mvn did not finish fetching the Kafka jars: {exc}") from exc
            jars = sorted(p.name for p in staging.glob("*.jar"))
            if proc.returncode != 0 or _KAFKA_JAR not in jars:
                # Maven prints its [ERROR] lines on stdout, so show both streams.
                raise RuntimeError(
                    f"mvn failed to fetch the Kafka {KAFKA_VERSION} jars "
                    f"(exit code {proc.returncode}, {len(jars)} jars copied).\n"
                    f"command: {' '.join(cmd)}\n"
                    f"--- stderr (tail) ---\n{_tail_text(proc.stderr)}\n"
                    f"--- stdout (tail) ---\n{_tail_text(proc.stdout)}"
                )
            (staging / _MARKER).write_text(
                json.dumps({"kafka_version": KAFKA_VERSION, "jars": jars}, indent=1) + "\n"
            )
            if lib.exists():
                # Only an incomplete leftover can be here (the complete case returned above).
                shutil.rmtree(lib)
            staging.rename(lib)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return lib


def _jars_complete(lib: Path) -> bool:
    try:
        marker = json.loads((lib / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("kafka_version") != KAFKA_VERSION:
        return False
    jars = marker.get("jars")
    # Listing the jars in the marker lets a pruned cache be noticed and re-fetched
    # instead of failing later with a ClassNotFoundException in server.log.
    return isinstance(jars, list) and all(
        isinstance(name, str) and (lib / name).is_file() for name in jars
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------- readiness

# Probing a broker that is still starting fails by design, and aiokafka logs every
# failed connect at ERROR level, which would bury real problems (and, without logging
# configured, print to the CLI user's terminal). The filter drops only the records
# emitted from inside a probe, which this context variable marks.
_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("_probing", default=False)


class _ProbeLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _PROBING.get()


_PROBE_FILTER = _ProbeLogFilter()


def _install_probe_filter() -> None:
    # Logger filters do not apply to records propagated from child loggers, so every
    # aiokafka logger used while bootstrapping gets it. addFilter is idempotent.
    for name in ("aiokafka", "aiokafka.conn"):
        logging.getLogger(name).addFilter(_PROBE_FILTER)


async def _probe(bootstrap_servers: str, attempt_s: float) -> bool:
    """One readiness attempt: does a metadata request succeed and list a broker?"""
    _install_probe_filter()
    token = _PROBING.set(True)
    # A starting broker accepts TCP connections before it serves requests, so the
    # request timeout must be short or a single attempt could hang for 40 s.
    timeout_ms = max(100, int(attempt_s * 1000))
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=timeout_ms,
        retry_backoff_ms=50,
    )
    try:
        async with asyncio.timeout(attempt_s):
            await client.bootstrap()
        # The metadata request can succeed before the broker has registered with the
        # controller; such a broker lists no brokers and cannot create topics yet.
        return len(client.cluster.brokers()) > 0
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()
        _PROBING.reset(token)


# The explicit timeout mirrors LocalKafka.start(timeout=...) and gives the error a
# useful message; wrapping the call in asyncio.timeout() would only raise a bare one.
async def wait_ready_async(bootstrap_servers: str, timeout: float) -> None:
    """Wait until the broker answers a metadata request that lists at least one broker.

    Raises ``TimeoutError`` if that has not happened within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"Kafka at {bootstrap_servers} not ready after {timeout:g} s")
        if await _probe(bootstrap_servers, min(2.0, remaining)):
            return
        await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))


def _run_sync(make_coro: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    # Called from code already running in an event loop (an async test calling
    # kill() and start(), say): asyncio.run refuses to nest, so run a private loop on
    # a worker thread. This blocks the caller's loop, which the sync API implies.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="localkafka") as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()


# ------------------------------------------------------------------------ broker


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    Chosen below the kernel's ephemeral range: a port the kernel hands out (bind to 0)
    lies in the range outgoing connections use too, so on a busy machine one of them
    may take it before the broker or server it was meant for binds it.
    """
    low = _ephemeral_low()
    chooser = random.SystemRandom()
    for _attempt in range(200):
        port = chooser.randrange(max(1024, low - 12_000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((_HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        found: int = sock.getsockname()[1]
        return found


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return max(2048, int(text.split()[0]))
    except (OSError, ValueError, IndexError):
        return 32_768


class LocalKafka:
    """A single-node KRaft broker whose state lives in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 9092,
        controller_port: int = 9093,
        heap_mb: int = 512,
        jars: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        if port == controller_port:
            raise ValueError(f"port and controller_port must differ (both {port})")
        # Absolute, because it is written into server.properties and matched against
        # the command line of a running broker to recognise it.
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.controller_port = controller_port
        # Clients connect wherever metadata says; a fault test's TCP proxy goes here.
        self.advertised_port = advertised_port if advertised_port is not None else port
        self.heap_mb = heap_mb
        self._jars = jars
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LocalKafka({str(self.data_dir)!r}, port={self.port})"

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> LocalKafka:
        """Rebuild the handle of a broker started earlier, possibly by another process."""
        state_path = Path(data_dir) / "broker.json"
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{state_path} not found: no broker was ever started in {data_dir}"
            ) from None
        return cls(
            Path(data_dir),
            port=int(state["port"]),
            controller_port=int(state["controller_port"]),
            heap_mb=int(state.get("heap_mb", 512)),
        )

    # -- paths

    @property
    def bootstrap_servers(self) -> str:
        return f"{_HOST}:{self.advertised_port}"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def kafka_log_dir(self) -> Path:
        """Kafka's ``log.dirs``: partition data and the KRaft metadata log."""
        return self.data_dir / "data"

    # -- state

    @property
    def pid(self) -> int | None:
        """The broker's process id if it is running, else None."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._alive(pid) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def is_ready(self, timeout: float = 2.0) -> bool:
        """True if a metadata request to the broker succeeds and lists a broker."""
        return _run_sync(lambda: _probe(self.bootstrap_servers, timeout))

    # -- lifecycle

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker and wait until it is ready; do nothing if it already runs."""
        deadline = time.monotonic() + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _make_private(self.data_dir)
        previous = self._proc
        try:
            # Serialises concurrent start() calls on one data dir (say `kafka up` from
            # two terminals) so only one of them spawns a JVM; the other adopts it.
            with _locked(self.data_dir / ".start.lock"):
                pid = self.pid
                if pid is None:
                    pid = self._spawn(deadline)
                else:
                    self._check_same_ports()
            self._wait_until_ready(pid, deadline, timeout)
            _make_private(self.data_dir)  # what was written while starting
        except BaseException:
            # A broker that failed to come up is of no use to anyone; don't leave it
            # holding the ports and the data dir lock. Comparing with the handle from
            # before also covers an interrupt (Ctrl-C in `kafka run`) that lands right
            # after the JVM was spawned, and never kills a broker we merely adopted.
            spawned = self._proc
            if spawned is not None and spawned is not previous:
                self._kill_pid(spawned.pid)
                self._forget()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the broker down cleanly (SIGTERM), escalating to SIGKILL after ``timeout``."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                self._kill_pid(pid)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the broker at once, as a crash would; data stays for a later start()."""
        pid = self.pid
        if pid is not None:
            self._kill_pid(pid)
        self._forget()

    # -- internals

    def _spawn(self, deadline: float) -> int:
        for port in (self.port, self.controller_port):
            if _port_in_use(port):
                # Without this check the readiness probe could be answered by whatever
                # already listens there, before our JVM fails to bind and exits.
                raise RuntimeError(
                    f"cannot start Kafka in {self.data_dir}: 127.0.0.1:{port} is already in use"
                )
        jars = self._jars if self._jars is not None else ensure_jars()
        java = _find_java()
        self._render_properties()
        if not (self.kafka_log_dir / "meta.properties").exists():
            self._format_storage(java, jars, deadline)

        cmd = [
            java,
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(256, self.heap_mb)}m",
            # A broker that ran out of heap is better dead (visible) than limping.
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration={_LOG4J.as_uri()}",
            "-cp",
            str(jars / "*"),
            "kafka.Kafka",
            str(self.properties_path),
        ]
        with self.log_path.open("ab") as log:
            # Appending keeps the history of earlier runs (a killed broker's last words
            # matter in fault tests); the banner tells the runs apart.
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(
                f"\n===== localkafka: starting Kafka {KAFKA_VERSION} at {stamp} =====\n".encode()
            )
            log.flush()
            # Own session: Ctrl-C in the terminal must not reach the JVM directly (the
            # `run` command shuts it down cleanly instead), and `up` can exit while the
            # broker keeps running.
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=_PRIVATE_UMASK,
            )
        pid = self._proc.pid
        _write_atomic(self.pid_path, f"{pid}\n")
        state = {
            "kafka_version": KAFKA_VERSION,
            "bootstrap_servers": self.bootstrap_servers,
            "port": self.port,
            "controller_port": self.controller_port,
            "heap_mb": self.heap_mb,
        }
        _write_atomic(self.state_path, json.dumps(state, indent=2) + "\n")
        return pid

    def _render_properties(self) -> None:
        template = Template(_TEMPLATE.read_text())
        rendered = template.substitute(
            port=self.port,
            advertised_port=self.advertised_port,
            controller_port=self.controller_port,
            log_dirs=_properties_escape(str(self.kafka_log_dir)),
        )
        _write_atomic(self.properties_path, rendered)

    def _format_storage(self, java: str, jars: Path, deadline: float) -> None:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        cmd = [
            java,
            f"-Dlog4j.configuration={_LOG4J.as_uri()}",
            "-cp",
            str(jars / "*"),
            "kafka.tools.StorageTool",
            "format",
            # "=" form: a urlsafe-base64 id may start with "-" and would then be
            # parsed as an option ("argument --cluster-id/-t: expected one argument").
            f"--cluster-id={cluster_id}",
            f"--config={self.properties_path}",
        ]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
                umask=_PRIVATE_UMASK,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"formatting Kafka storage in {self.kafka_log_dir} timed out"
            ) from exc
        if proc.returncode != 0:
            raise RuntimeError(
                f"formatting Kafka storage in {self.kafka_log_dir} failed "
                f"(exit code {proc.returncode}):\n{_tail_text(proc.stdout + proc.stderr)}"
            )

    def _wait_until_ready(self, pid: int, deadline: float, timeout: float) -> None:
        while True:
            if not self._alive(pid):
                raise RuntimeError(
                    f"Kafka broker (pid {pid}) exited during startup; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"Kafka broker (pid {pid}) not ready on {self.bootstrap_servers} "
                    f"after {timeout:g} s; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self.is_ready(timeout=min(2.0, remaining)):
                return
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _check_same_ports(self) -> None:
        try:
            running = LocalKafka.from_data_dir(self.data_dir)
        except (OSError, ValueError, KeyError):
            return
        if (running.port, running.controller_port) != (self.port, self.controller_port):
            raise RuntimeError(
                f"a broker from {self.data_dir} already runs on ports "
                f"{running.port}/{running.controller_port}, not "
                f"{self.port}/{self.controller_port}; stop it first"
            )

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            # Our own child: poll() also reaps it, so a dead broker is not kept as a zombie.
            return self._proc.poll() is None
        return _pid_alive(pid) and self._is_our_broker(pid)

    def _is_our_broker(self, pid: int) -> bool:
        # Guards against a stale pid file whose pid now belongs to an unrelated process
        # (pids are reused), which stop() would otherwise signal.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return not Path("/proc/self").exists()  # no procfs: trust the pid file
        except OSError:
            return True
        return str(self.properties_path).encode() in cmdline.split(b"\0")

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _kill_pid(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        # The kernel releases the ports and the log dir lock only once the process is
        # gone, and a restart right after kill() needs both.
        if not self._wait_exit(pid, 10.0):
            raise RuntimeError(f"Kafka broker (pid {pid}) survived SIGKILL for 10 s")

    def _forget(self) -> None:
        self._proc = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of ``server.log`` (for error messages and test failures)."""
        try:
            data = self.log_path.read_bytes()
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        return _tail_text(data.decode(errors="replace"), lines)


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("cannot start Kafka: no 'java' on PATH and JAVA_HOME is not set")
    return java


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the JVM, allow binding over TIME_WAIT leftovers of a killed broker;
        # only a live listener counts as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed broker whose parent has not reaped it yet still "exists" as a zombie.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Either it exited just now or there is no procfs (macOS) to ask.
        return not Path("/proc/self/stat").exists()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _properties_escape(value: str) -> str:
    # java.util.Properties reads ISO-8859-1 and treats backslash as an escape.
    out: list[str] = []
    for ch in value.replace("\\", "\\\\"):
        if ord(ch) < 0x80:
            out.append(ch)
        else:
            encoded = ch.encode("utf-16-be")
            out.extend(
                f"\\u{int.from_bytes(encoded[i : i + 2], 'big'):04x}"
                for i in range(0, len(encoded), 2)
            )
    return "".join(out)


def _write_atomic(path: Path, text: str) -> None:
    # Other processes (`kafka status`, from_data_dir) may read these files at any time.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _tail_text(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --------------------------------------------------------------------------- CLI


# The data directory holds every callback (device ids, IPs) and the dead letters'
# partner answers: its owner alone may read it, and so may only the broker's files.
_PRIVATE_UMASK = 0o077


def _make_private(directory: Path) -> None:
    """Owner-only modes on ``directory`` and everything already in it (older runs)."""
    directory.chmod(0o700)
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode & 0o700)


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``kafka`` command (``up``, ``down``, ``status``, ``fetch``, ``run``)."""
    kafka = subparsers.add_parser(
        "kafka",
        help="run the local single-node Kafka broker",
        description=f"Manage the local single-node Apache Kafka {KAFKA_VERSION} broker.",
    )
    commands = kafka.add_subparsers(dest="kafka_command", metavar="COMMAND", required=True)
    specs: list[tuple[str, Callable[[argparse.Namespace], int], str, bool]] = [
        ("up", _cmd_up, "start the broker in the background and wait until it is ready", True),
        ("down", _cmd_down, "stop the broker (SIGTERM, then SIGKILL)", True),
        ("status", _cmd_status, "print the broker's state as JSON; exit 0 if ready", True),
        ("fetch", _cmd_fetch, "download and cache the broker's jars only", False),
        ("run", _cmd_run, "run the broker in the foreground until SIGTERM/SIGINT", True),
    ]
    for name, func, help_text, broker_options in specs:
        cmd = commands.add_parser(name, help=help_text, description=help_text)
        if broker_options:
            # down/status act on a running broker: its heap is not theirs to choose.
            _add_broker_options(cmd, starts=name in ("up", "run"))
        cmd.set_defaults(func=func)


def _env_port(variable: str, default: int) -> int:
    text = os.environ.get(variable, "")
    return int(text) if text.isdigit() else default


def _add_broker_options(parser: argparse.ArgumentParser, *, starts: bool) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=_DEFAULT_DATA_DIR,
        help="broker state, data and server.log (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_env_port("POSTBACK_HUB_KAFKA_PORT", 9092),
        help="client port on 127.0.0.1 (env POSTBACK_HUB_KAFKA_PORT; default: %(default)s)",
    )
    parser.add_argument(
        "--controller-port",
        type=int,
        default=_env_port("POSTBACK_HUB_KAFKA_CONTROLLER_PORT", 9093),
        help="KRaft controller port on 127.0.0.1 (env POSTBACK_HUB_KAFKA_CONTROLLER_PORT; "
        "default: %(default)s)",
    )
    if starts:
        parser.add_argument(
            "--heap-mb", type=int, default=512, help="JVM max heap in MiB (default: %(default)s)"
        )


def _broker_from_args(args: argparse.Namespace) -> LocalKafka:
    return LocalKafka(
        args.data_dir,
        port=args.port,
        controller_port=args.controller_port,
        heap_mb=getattr(args, "heap_mb", 512),
    )


def _existing_broker(args: argparse.Namespace) -> LocalKafka:
    # down/status act on what is actually there: the ports recorded at start win over
    # the command line defaults, so `kafka down` needs no repeated --port.
    try:
        return LocalKafka.from_data_dir(args.data_dir)
    except (OSError, ValueError, KeyError):
        return _broker_from_args(args)


def _cmd_up(args: argparse.Namespace) -> int:
    broker = _broker_from_args(args)
    try:
        broker.start()
    except RuntimeError as exc:
        print(f"kafka up: {exc}", file=sys.stderr)
        return 1
    print(
        f"Kafka {KAFKA_VERSION} listening on {broker.bootstrap_servers} "
        f"(pid {broker.pid}, log: {broker.log_path})"
    )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    broker = _existing_broker(args)
    pid = broker.pid
    broker.stop()
    if pid is None:
        print(f"no Kafka broker running from {broker.data_dir}")
    else:
        print(f"stopped Kafka broker (pid {pid}) on {broker.bootstrap_servers}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    broker = _existing_broker(args)
    pid = broker.pid
    # Probe only our own broker: anything else answering on the port is not "ready".
    ready = pid is not None and broker.is_ready()
    status = {
        "running": pid is not None,
        "ready": ready,
        "bootstrap_servers": broker.bootstrap_servers,
        "pid": pid,
        "data_dir": str(broker.data_dir),
    }
    print(json.dumps(status))
    return 0 if ready else 1


def _cmd_fetch(args: argparse.Namespace) -> int:
    try:
        lib = ensure_jars()
    except RuntimeError as exc:
        print(f"kafka fetch: {exc}", file=sys.stderr)
        return 1
    print(f"Kafka {KAFKA_VERSION} jars in {lib}")
    return 0


class _StopRequested(Exception):
    pass


def _cmd_run(args: argparse.Namespace) -> int:
    broker = _broker_from_args(args)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _StopRequested(signum)

    # Raising from the handler also interrupts a start() that is still waiting, so
    # Ctrl-C during startup stops the half-started broker too.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            broker.start()
            print(
                f"Kafka {KAFKA_VERSION} listening on {broker.bootstrap_servers} "
                f"(pid {broker.pid}, log: {broker.log_path}); Ctrl-C to stop",
                flush=True,
            )
            while broker.is_running():
                time.sleep(0.5)
            print(
                f"kafka run: broker exited unexpectedly; last lines of {broker.log_path}:\n"
                f"{broker.log_tail()}",
                file=sys.stderr,
            )
            return 1
        except _StopRequested:
            pass
        except RuntimeError as exc:
            print(f"kafka run: {exc}", file=sys.stderr)
            return 1
        # A second signal must not abandon the shutdown half-way; stop() is bounded
        # anyway (SIGKILL after its timeout).
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        broker.stop()
        print("Kafka broker stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
