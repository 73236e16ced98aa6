"""Make docs/dashboard.png: the study page of a live server while fake workers run a study.

A server (SQLite in a temporary folder) and four fake workers in threads (the real HTTP
protocol, a synthetic objective, 1.5 s "trainings" with heartbeats) run a 40-trial
AutoPEFT study proposed by Sobol; once 28 trials are done the page is captured with some
trials still running and queued. Needs Debian's chromium (as the browser tests).

Run:
    .venv/bin/python scripts/dashboard_screenshot.py [--output docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopeft_service.core.config import Settings  # noqa: E402
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerThread  # noqa: E402
from tests.api.conftest import CLIENT, study_spec  # noqa: E402
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from workers.client import ServerClient  # noqa: E402
from workers.fake_worker import FakeWorker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--done", type=int, default=28, help="trials done before the shot")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(database_url=f"sqlite:///{folder}/autopeft.db",
                            client_tokens=[CLIENT_TOKEN], worker_tokens=[WORKER_TOKEN],
                            long_poll_seconds=1, proposer_poll_seconds=0.2, port=0,
                            artifact_dir=f"{folder}/artifacts")
        with ServerThread(settings) as server:
            spec = study_spec(name="sst2-autopeft", backbone="minilm",
                              budget={"total_trials": 40, "initial_trials": 40,
                                      "max_parallel": 6, "max_attempts": 2})
            study = httpx.post(f"{server.base_url}/v1/studies", json=spec, headers=CLIENT,
                               timeout=30).json()
            stop = threading.Event()
            threads = []
            for index in range(4):
                client = ServerClient(server.base_url, WORKER_TOKEN, f"gpu-{index}")
                worker = FakeWorker(client, train_seconds=1.5 + 0.4 * index,
                                    heartbeat_seconds=0.5)
                threads.append(threading.Thread(target=worker.run, daemon=True,
                                                kwargs={"stop": stop, "idle_rounds": 1000}))
                threads[-1].start()
            while True:
                counts = httpx.get(f"{server.base_url}/v1/studies/{study['id']}",
                                   headers=CLIENT, timeout=30).json()["counts"]
                if counts["completed"] >= args.done:
                    break
                time.sleep(0.5)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                     args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.goto(f"{server.base_url}/ui/#/studies/{study['id']}")
                page.fill("#token", CLIENT_TOKEN)
                page.click("#login-form button[type=submit]")
                page.wait_for_selector("#pareto circle.front")
                page.wait_for_selector("#workers tbody tr")
                time.sleep(0.5)
                page.screenshot(path=str(args.output), full_page=False)
                browser.close()
            stop.set()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
