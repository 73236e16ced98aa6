"""Run the real server for tests and benchmarks: in a thread, or as a killable process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from autopeft_service.api.app import create_app
from autopeft_service.core.config import Settings
from autopeft_service.storage.migrate import upgrade_to_head
from autopeft_service.testing.postgres import free_port

CLIENT_TOKEN = "test-client-token"
WORKER_TOKEN = "test-worker-token"


def wait_for_health(base_url: str, timeout: float = 60.0) -> None:
    """Block until ``GET /v1/health`` answers 200."""
    end = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base_url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"server at {base_url} did not become healthy")
        time.sleep(0.1)


class ServerThread:
    """The app under uvicorn in a background thread of this process (migrated first)."""

    def __init__(self, settings: Settings) -> None:
        self.port = settings.port or free_port()
        self.settings = settings.model_copy(update={"port": self.port})
        upgrade_to_head(self.settings.database_url)
        self.app = create_app(self.settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2, backlog=2048)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for_health(self.base_url)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    @property
    def services(self):  # type: ignore[no-untyped-def]
        return self.app.state.services


class ServerProcess:
    """``autopeft serve`` as a child process that tests can SIGKILL and start again."""

    def __init__(self, database_url: str, port: int | None = None, log: Path | None = None,
                 **settings: str) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "AUTOPEFT_DATABASE_URL": database_url,
                    "AUTOPEFT_CLIENT_TOKENS": CLIENT_TOKEN, "AUTOPEFT_WORKER_TOKENS": WORKER_TOKEN,
                    **{f"AUTOPEFT_{k.upper()}": str(v) for k, v in settings.items()}}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        output = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autopeft_service.cli", "serve", "--port", str(self.port)],
            env=self.env, stdout=output, stderr=subprocess.STDOUT)
        wait_for_health(self.base_url)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
