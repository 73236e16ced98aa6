"""Fixtures of the end-to-end worker tests: a real server (SQLite file or PostgreSQL) and
real worker processes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autopeft_service.local import LocalWorkers
from autopeft_service.testing.server import ServerProcess


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'autopeft.db'}"


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    servers: list[ServerProcess] = []

    def start(url: str, **settings: str) -> ServerProcess:
        server = ServerProcess(url, log=tmp_path / "server.log", **settings).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class Workers(LocalWorkers):
    """Single-threaded workers with a private token cache."""

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        return super().start(name, "--threads", "1", *extra)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Any]:
    made: list[Workers] = []

    def make(server: ServerProcess) -> Workers:
        made.append(Workers(server, tmp_path, env={"AUTOPEFT_CACHE_DIR": str(tmp_path / "cache")}))
        return made[-1]

    yield make
    for group in made:
        group.stop(timeout=5)


