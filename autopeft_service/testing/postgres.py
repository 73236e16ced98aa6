"""A throwaway PostgreSQL server for tests and benchmarks (real server, temporary folder).

Uses the Debian ``postgresql`` package's binaries. When run as root, the cluster is
created and run as the ``postgres`` system user (PostgreSQL refuses to run as root).
Set ``AUTOPEFT_TEST_POSTGRES_URL`` to use an existing server instead.
``PostgresCluster`` is a cluster that can also be stopped and started again (fast or
immediate shutdown) on the same data folder and port: a database outage under load.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from autopeft_service.local import free_port


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries were found and no server URL was given."""


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed: `apt-get install postgresql` (the CI script does), or "
        "set AUTOPEFT_TEST_POSTGRES_URL to a server")


class PostgresCluster:
    """A private PostgreSQL cluster on its own data folder and loopback port that can be
    stopped and started again (same folder, same port), e.g. to restart a server's database
    under load. ``TemporaryPostgres`` is the start-once form the shared fixtures use.

    Args:
        max_connections: the server's ``max_connections``.
        synchronous_commit: on (PostgreSQL's default): a commit is acknowledged once its
            WAL is written out, so it survives an ``immediate`` stop. Off (faster; what the
            shared test cluster uses) acknowledges commits whose WAL is still in shared
            memory, and an ``immediate`` stop, like a crash, loses the last of them: leases
            and results the server had already answered for. (``fsync`` is off either way:
            written WAL survives the server's crash; only an OS crash would lose it.)

    Attributes:
        port: the TCP port (kept across restarts).
        admin_url: a libpq URL of the ``postgres`` database (superuser ``postgres``).
    """

    def __init__(self, max_connections: int = 400, synchronous_commit: bool = False) -> None:
        self._bin = _bin_dir()
        self._root = Path(tempfile.mkdtemp(prefix="autopeft-pg-"))
        self._data = self._root / "data"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self._root, "postgres", "postgres")
        self._run(["initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres",
                   "--no-sync", "-E", "UTF8"])
        self._options = (f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 "
                         f"-c max_connections={max_connections} -c fsync=off "
                         f"-c synchronous_commit={'on' if synchronous_commit else 'off'} "
                         "-c full_page_writes=off")
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, command: list[str]) -> None:
        command = [str(self._bin / command[0]), *command[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresCluster:
        """Start the server and wait until it accepts connections (after crash recovery,
        when the last stop was ``immediate``)."""
        self._run(["pg_ctl", "-D", str(self._data), "-o", self._options, "-l",
                   str(self._root / "log"), "-w", "-t", "60", "start"])
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data: ``pg_ctl stop -m mode``, waiting until it is
        down. ``fast``: sessions are terminated and a clean shutdown checkpoint is written;
        ``immediate``: every process quits at once, like a crash (the next start runs
        crash recovery); ``smart`` would wait for clients to disconnect."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        self._run(["pg_ctl", "-D", str(self._data), "-m", mode, "-w", "-t", "60", "stop"])

    def restart(self, mode: str = "fast", down_seconds: float = 0.0) -> None:
        """``stop(mode)``, stay down ``down_seconds``, then ``start()`` on the same port."""
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        try:
            if (self._data / "postmaster.pid").exists():
                self._run(["pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


class TemporaryPostgres:
    """Start a private PostgreSQL cluster on a free loopback port; ``stop()`` removes it.

    Attributes:
        admin_url: a libpq URL of the ``postgres`` database (superuser ``postgres``).
        cluster: the ``PostgresCluster`` underneath.
    """

    def __init__(self, max_connections: int = 400) -> None:
        self.cluster = PostgresCluster(max_connections)
        try:
            self.cluster.start()
        except BaseException:
            self.cluster.remove()
            raise
        self.port = self.cluster.port
        self.admin_url = self.cluster.admin_url

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        self.cluster.remove()


def create_database(admin_url: str, name: str | None = None) -> str:
    """Create a fresh database on the server of ``admin_url``; returns its SQLAlchemy URL."""
    name = name or f"autopeft_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def wait_until_accepting(admin_url: str, timeout: float = 30.0) -> None:
    """Block until the server accepts connections."""
    end = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(admin_url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
