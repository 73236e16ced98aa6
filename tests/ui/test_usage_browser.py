"""The dashboard's usage panel (issue 31, item 3: usage against quota) in a real headless
Chromium against a live server with a tenant that has quotas."""

from __future__ import annotations

from typing import Any

import httpx

from autopeft_service.domain.tenancy import Role
from autopeft_service.storage import repository as repo
from autopeft_service.storage.database import Database
from autopeft_service.testing.server import ServerThread
from tests.api.conftest import study_spec, take_lease
from tests.ui.test_dashboard_browser import LIVE_MS, sign_in


def submit_as(http: httpx.Client, token: str, name: str, trials: int = 3) -> dict[str, Any]:
    budget = {"total_trials": trials, "initial_trials": trials, "max_parallel": trials,
              "max_attempts": 2}
    response = http.post("/v1/studies", json=study_spec(name=name, budget=budget),
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    return response.json()


def test_the_usage_panel_shows_usage_against_quota_and_marks_a_full_quota(
        page: Any, server: ServerThread) -> None:
    database = Database(server.settings.database_url)
    try:
        with database.session() as session:
            repo.create_tenant(session, "lab")
            repo.set_tenant_limits(session, "lab", {"max_running_studies": 2,
                                                    "max_parallel_trials": 1})
            member = repo.create_token(session, "lab", Role.MEMBER)[1]
            admin = repo.create_token(session, "default", Role.ADMIN)[1]
    finally:
        database.dispose()
    lab = "#usage tr[data-tenant='lab']"
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        submit_as(http, member, "first")
        take_lease(http)  # the shared pool's env worker: lab's one parallel trial
        sign_in(page, server.base_url, token=member)
        page.wait_for_selector(f"{lab} td.running")
        # a member sees its own tenant only
        assert page.eval_on_selector_all("#usage tbody tr", "rows => rows.map("
                                         "r => r.dataset.tenant)") == ["lab"]
        assert page.inner_text("#usage caption") == "Usage against quota"
        assert page.inner_text(f"{lab} td.running .used") == "1/2"
        assert page.get_attribute(f"{lab} td.running", "class") == "num quota running"
        assert page.locator(f"{lab} td.running .quota-note").count() == 0
        assert page.get_attribute(f"{lab} td.running meter", "value") == "1"
        # the one parallel trial is leased: that quota is reached
        assert page.inner_text(f"{lab} td.leased .used") == "1/1"
        assert "full" in page.get_attribute(f"{lab} td.leased", "class").split()
        assert page.inner_text(f"{lab} td.leased .quota-note") == "quota reached"
        # no queue quota: no limit, no meter
        page.wait_for_selector(f"{lab} td.ready:has-text('(no limit)')")
        assert page.locator(f"{lab} td.ready meter").count() == 0
        assert page.inner_text(f"{lab} td.ready .used") == "2"
        # a second study takes the last running place: shown within a poll, no reload
        submit_as(http, member, "second")
        page.wait_for_selector(f"{lab} td.running.full", timeout=LIVE_MS)
        assert page.inner_text(f"{lab} td.running .used") == "2/2"
        assert page.inner_text(f"{lab} td.running .quota-note") == "quota reached"
    # an admin sees every tenant: the environment's (default, no quotas) and lab
    page.click("#logout")
    sign_in(page, server.base_url, token=admin)
    page.wait_for_selector("#usage tr[data-tenant='default']")
    assert page.eval_on_selector_all("#usage tbody tr", "rows => rows.map("
                                     "r => r.dataset.tenant)") == ["default", "lab"]
    assert page.inner_text("#usage tr[data-tenant='default'] td.running") == "0 (no limit)"
    assert page.inner_text(f"{lab} td.running .used") == "2/2"
