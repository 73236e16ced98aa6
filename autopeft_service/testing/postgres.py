"""A throwaway PostgreSQL server for tests and benchmarks (real server, temporary folder).

Uses the Debian ``postgresql`` package's binaries. When run as root, the cluster is
created and run as the ``postgres`` system user (PostgreSQL refuses to run as root).
Set ``AUTOPEFT_TEST_POSTGRES_URL`` to use an existing server instead.
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


class TemporaryPostgres:
    """Start a private PostgreSQL cluster on a free loopback port; ``stop()`` removes it.

    Attributes:
        admin_url: a libpq URL of the ``postgres`` database (superuser ``postgres``).
    """

    def __init__(self, max_connections: int = 400) -> None:
        self._bin = _bin_dir()
        self._root = Path(tempfile.mkdtemp(prefix="autopeft-pg-"))
        self._data = self._root / "data"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self._root, "postgres", "postgres")
        self._run(["initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres",
                   "--no-sync", "-E", "UTF8"])
        options = (f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 "
                   f"-c max_connections={max_connections} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run(["pg_ctl", "-D", str(self._data), "-o", options, "-l",
                   str(self._root / "log"), "-w", "-t", "60", "start"])
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, command: list[str]) -> None:
        command = [str(self._bin / command[0]), *command[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self._run(["pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


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
