"""A throwaway PostgreSQL server for the test suite: ``initdb`` + ``pg_ctl`` on a free port.

The binaries come from the machine's packages (``make test`` installs Debian's
``postgresql`` where ``initdb`` is missing). PostgreSQL refuses to run as root,
so as root the cluster is owned by, and run as, the ``postgres`` user (created by
the Debian package) or else ``nobody``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from postback_hub.service.localkafka import free_port
from tests.support import eventually_sync


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent  # Debian links only some tools onto PATH
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError(
            "PostgreSQL is not installed (no initdb): run `make test`, which installs it"
        )
    return Path(candidates[-1]).parent


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return user
    raise RuntimeError("running as root and no postgres or nobody user to run PostgreSQL as")


class LocalPostgres:
    """One PostgreSQL cluster in a temporary directory, trusting local TCP connections."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="pbh-postgres-"))
        self.data = self.root / "data"
        self.port = free_port()

    def _command(self, *args: str) -> list[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is None:
            return command
        return ["runuser", "-u", self.user, "--", *command]

    def start(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            self._command(
                "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"
            ),
            check=True,
            capture_output=True,
        )
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        options += " -c fsync=off -c max_connections=50"
        subprocess.run(
            self._command(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-o",
                options,
                "-w",
                "start",
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        eventually_sync(
            self._accepts_connections,
            30,
            interval=0.1,
            what="PostgreSQL accepting connections",
        )

    def _accepts_connections(self) -> bool:
        ready = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            check=False,
        )
        return ready.returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            self._command("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)
