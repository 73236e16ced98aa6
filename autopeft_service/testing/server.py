"""Run the real server for tests and benchmarks: in a thread, or as a killable process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import uvicorn

from autopeft_service.api.app import create_app
from autopeft_service.api.services import Services
from autopeft_service.core.config import Settings
from autopeft_service.local import LocalServer, free_port, wait_for_health
from autopeft_service.storage.migrate import upgrade_to_head

CLIENT_TOKEN = "test-client-token"
WORKER_TOKEN = "test-worker-token"


def fast_settings(database_url: str, artifact_dir: Path | str, **overrides: object) -> Settings:
    """Settings of a test server: the test tokens, short polls and sweeps (so tests wait
    tenths of a second, not the production seconds), any free port; ``overrides`` win."""
    values: dict[str, Any] = {  # Settings' fields are of several types
        "database_url": database_url, "client_tokens": [CLIENT_TOKEN],
        "worker_tokens": [WORKER_TOKEN], "long_poll_seconds": 0.5,
        "proposer_poll_seconds": 0.1, "sweep_interval_seconds": 0.2, "port": 0,
        "artifact_dir": str(artifact_dir)}
    values.update(overrides)
    return Settings(**values)


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
    def services(self) -> Services:
        # cast: Starlette's app.state holds Any; create_app stores the Services there.
        return cast(Services, self.app.state.services)


class ServerProcess(LocalServer):
    """``autopeft serve`` as a killable child process, with the test tokens."""

    def __init__(self, database_url: str, port: int | None = None, log: Path | None = None,
                 processes: int = 1, **settings: str) -> None:
        if "artifact_dir" not in settings and log is not None:
            settings["artifact_dir"] = str(log.parent / "artifacts")
        super().__init__(database_url, port, log, client_token=CLIENT_TOKEN,
                         worker_token=WORKER_TOKEN, processes=processes, **settings)
