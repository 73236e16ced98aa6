"""LocalServer and LocalWorkers: the child processes the demo, tests and benchmarks start."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from autopeft_service.client import AutopeftClient
from autopeft_service.local import LocalServer, LocalWorkers, free_port
from tests.workers.test_worker import spec
from workers.commands.demo import _watch_workers


def test_generated_tokens_never_start_with_a_dash(tmp_path: Path) -> None:
    """A token starting with "-" was read by argparse as an option: the demo's only worker
    exited at once and the demo waited forever (1 run in 64 with urlsafe tokens)."""
    for _ in range(500):
        server = LocalServer(f"sqlite:///{tmp_path / 'a.db'}", port=1)
        assert not server.client_token.startswith("-")
        assert not server.worker_token.startswith("-")


def test_a_worker_token_starting_with_a_dash_still_reaches_the_server(
        tmp_path: Path, tiny_bert_path: Path) -> None:
    server = LocalServer(f"sqlite:///{tmp_path / 'a.db'}", log=tmp_path / "server.log",
                         worker_token="-starts-with-a-dash", long_poll_seconds="2").start()
    workers = LocalWorkers(server, tmp_path, env={"AUTOPEFT_CACHE_DIR": str(tmp_path / "c")})
    try:
        with AutopeftClient(server.base_url, server.client_token) as client:
            study = client.submit(spec(tiny_bert_path, trials=1, train_examples=32,
                                       epochs=0.25, max_parallel=1))
            workers.start("worker-0", "--threads", "1", "--max-trials", "1")
            final = client.watch(study.id, interval=0.5, timeout=180)
        assert final.counts.get("completed") == 1, workers.log("worker-0")
    finally:
        workers.stop(timeout=5)
        server.stop()


def test_watching_workers_notices_when_every_worker_has_exited(tmp_path: Path) -> None:
    """The demo stops watching (and says why) instead of waiting for trials nobody runs."""
    nowhere = LocalServer(f"sqlite:///{tmp_path / 'a.db'}", port=free_port())  # never started
    workers = LocalWorkers(nowhere, tmp_path)
    workers.start("worker-0", "--connect-timeout", "1")
    workers.start("worker-1", "--connect-timeout", "1")
    assert not workers.all_exited()
    all_exited = threading.Event()
    watcher = threading.Thread(target=_watch_workers, args=(workers, all_exited, 0.1))
    started = time.monotonic()
    watcher.start()
    assert all_exited.wait(60), "the watcher never saw the workers exit"
    assert workers.all_exited() and time.monotonic() - started < 60
    assert "cannot reach" in workers.log("worker-0")
