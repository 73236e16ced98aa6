"""A server and workers on this machine, as child processes (the demo; tests; benchmarks).

Both are the real programs (``autopeft serve``, ``autopeft worker``) talking HTTP over
loopback; nothing here is a stand-in.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

#: Files of a demo folder (``.autopeft/demo-<time>/``), beside the workers' logs.
DEMO_DATABASE = "autopeft.db"
DEMO_ARTIFACTS = "artifacts"
DEMO_TOKENS = "tokens.json"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_health(base_url: str, timeout: float = 60.0,
                    process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until ``GET /v1/health`` answers 200.

    Raises:
        RuntimeError: ``process`` exited first.
        TimeoutError: not healthy within ``timeout`` seconds.
    """
    end = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base_url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        if time.monotonic() > end:
            raise TimeoutError(f"server at {base_url} did not become healthy")
        time.sleep(0.1)


def new_token() -> str:
    """A random bearer token (hex, not urlsafe: a token starting with "-" reads as an
    option on a command line)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class DemoFolder:
    """One demo's folder: its SQLite database, artefact store and bearer tokens.

    Attributes:
        path: the folder (``.autopeft/demo-<time>/``).
    """

    path: Path

    @property
    def database(self) -> Path:
        return self.path / DEMO_DATABASE

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    @property
    def artifact_dir(self) -> Path:
        return self.path / DEMO_ARTIFACTS

    @property
    def tokens_file(self) -> Path:
        return self.path / DEMO_TOKENS

    @classmethod
    def find(cls, path: Path) -> DemoFolder:
        """The demo at ``path``: a demo folder, or a folder of them (``.autopeft/``: the
        newest, by its ``demo-<time>`` name).

        Raises:
            FileNotFoundError: no demo database at ``path`` nor in a ``demo-*`` folder in it.
        """
        path = path.expanduser().resolve()
        if (path / DEMO_DATABASE).is_file():
            return cls(path)
        demos = sorted(child for child in path.glob("demo-*")
                       if (child / DEMO_DATABASE).is_file()) if path.is_dir() else []
        if not demos:
            raise FileNotFoundError(f"{path} holds no demo (no {DEMO_DATABASE} in it or in a "
                                    "demo-* folder in it)")
        return cls(demos[-1])

    def save_tokens(self, client_token: str, worker_token: str) -> None:
        """Write the demo's tokens (readable by the owner only), for ``serve --demo``."""
        self.tokens_file.write_text(json.dumps({"client_token": client_token,
                                                "worker_token": worker_token}) + "\n")
        self.tokens_file.chmod(0o600)

    def tokens(self) -> tuple[str, str]:
        """The demo's (client, worker) tokens; a demo older than ``tokens.json`` gets new
        ones, saved so that every later ``serve --demo`` uses the same.

        Raises:
            ValueError: ``tokens.json`` is not the JSON object this class writes.
        """
        if not self.tokens_file.is_file():
            self.save_tokens(new_token(), new_token())
        try:
            data = json.loads(self.tokens_file.read_text())
            return str(data["client_token"]), str(data["worker_token"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{self.tokens_file} is not a tokens file: {error}") from error


class LocalServer:
    """``autopeft serve`` as a child process that can be killed and started again.

    Args:
        database_url: the database (kept across restarts).
        client_token, worker_token: bearer tokens (random when omitted).
        log: file the server's output is appended to (discarded when omitted).
        processes: server processes (``autopeft serve --processes``).
        settings: more ``AUTOPEFT_*`` settings, e.g. ``lease_seconds="3"`` (on SQLite,
            ``artifact_dir`` defaults to ``artifacts/`` beside the database file).
    """

    def __init__(self, database_url: str, port: int | None = None, log: Path | None = None,
                 client_token: str | None = None, worker_token: str | None = None,
                 processes: int = 1, **settings: str) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.client_token = client_token or new_token()
        self.worker_token = worker_token or new_token()
        if "artifact_dir" not in settings and database_url.startswith("sqlite:///"):
            # artefacts beside the database file, not in whatever the current folder is
            settings["artifact_dir"] = str(Path(database_url.removeprefix("sqlite:///")
                                                ).parent / "artifacts")
        self.env = {**os.environ, "AUTOPEFT_DATABASE_URL": database_url,
                    "AUTOPEFT_CLIENT_TOKENS": self.client_token,
                    "AUTOPEFT_WORKER_TOKENS": self.worker_token,
                    **{f"AUTOPEFT_{k.upper()}": str(v) for k, v in settings.items()}}
        self.log = log
        self.processes = processes
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalServer:
        """Start (migrating the database first) and wait until healthy."""
        output = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autopeft_service.cli", "serve", "--port", str(self.port),
             "--processes", str(self.processes)],
            env=self.env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: kill() reaches every process
        wait_for_health(self.base_url, process=self.process)
        return self

    @property
    def running(self) -> bool:
        """True while the started server process is alive."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the server's whole process group (with ``processes`` > 1, uvicorn's
        worker processes too): no shutdown handlers run."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class LocalWorkers:
    """``autopeft worker`` child processes for one server, each with its own log file."""

    def __init__(self, server: LocalServer, log_dir: Path, env: dict[str, str] | None = None
                 ) -> None:
        self.server = server
        self.log_dir = log_dir
        self.env = {**os.environ, **(env or {})}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        """Start a worker called ``name`` with extra ``autopeft worker`` arguments."""
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "autopeft_service.cli", "worker", "--server",
             self.server.base_url, f"--token={self.server.worker_token}", "--name", name,
             "--log-level", "info", *extra],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.processes[name] = process
        return process

    def all_exited(self) -> bool:
        """True once every started worker process has exited."""
        return all(process.poll() is not None for process in self.processes.values())

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every worker (running trials are preempted), SIGKILL stragglers."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        end = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
