"""A real headless Chromium (Debian's, driven by Playwright) against a live server."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autopeft_service.testing.server import ServerThread, fast_settings

#: Debian's chromium (.ci/run installs it). Playwright's own browser download needs the
#: internet; Playwright drives any Chromium given its path.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Without the background-networking flags Chromium keeps opening connections that this
#: closed network refuses; as root it needs --no-sandbox.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: install Debian's chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    settings = fast_settings(f"sqlite:///{tmp_path / 'ui.db'}", tmp_path / "artifacts")
    with ServerThread(settings) as running:
        yield running


class PrefixProxy:
    """A reverse proxy serving ``upstream`` under ``/autopeft/`` (the prefix stripped, as
    nginx or an ingress does), recording every URL it forwards."""

    def __init__(self, upstream: str) -> None:
        import httpx
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        from autopeft_service.local import free_port

        self.urls: list[str] = []
        client = httpx.AsyncClient(base_url=upstream, timeout=30)

        async def forward(request: Request) -> Response:
            self.urls.append(str(request.url))
            path = request.url.path.removeprefix("/autopeft")
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            answer = await client.request(request.method, path, params=request.query_params,
                                          headers=headers, content=await request.body())
            kept = {k: v for k, v in answer.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding",
                                         "content-encoding", "connection")}
            return Response(answer.content, status_code=answer.status_code, headers=kept)

        app = Starlette(routes=[Route("/autopeft/{rest:path}", forward,
                                      methods=["GET", "POST"])])
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/autopeft"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> PrefixProxy:
        import time

        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
