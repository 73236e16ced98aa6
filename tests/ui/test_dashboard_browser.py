"""The dashboard in a real headless Chromium against a live server and HTTP workers."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerThread
from tests.api.conftest import (
    CLIENT,
    WORKER,
    lease_result,
    report_result,
    study_spec,
    take_lease,
)
from tests.ui.conftest import PrefixProxy

#: The page polls every 2 s; a change must show within 5 s (the issue's bound).
LIVE_MS = 5000


def submit(http: httpx.Client, trials: int = 8, **overrides: Any) -> dict[str, Any]:
    budget = {"total_trials": trials, "initial_trials": trials, "max_parallel": trials,
              "max_attempts": 2}
    response = http.post("/v1/studies", json=study_spec(budget=budget, **overrides),
                         headers=CLIENT)
    assert response.status_code == 201, response.text
    return response.json()


def sign_in(page: Any, base_url: str, token: str = CLIENT_TOKEN, route: str = "") -> None:
    page.goto(f"{base_url}/ui/{route}")
    page.wait_for_selector("#login-view:not([hidden])")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def test_login_then_a_bad_token_brings_the_login_back(page: Any, server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, name="login study")
    sign_in(page, server.base_url, token="not-a-token")
    page.wait_for_selector("#login-error:has-text('Token refused')")
    assert page.is_visible("#login-view") and not page.is_visible("#studies-view")
    sign_in(page, server.base_url)
    page.wait_for_selector(f"#studies tr[data-study='{study['id']}']")
    assert page.inner_text(f"#studies tr[data-study='{study['id']}'] td:nth-child(2)") \
        == "login study"
    # the token is kept in this tab's sessionStorage, never in the URL
    assert CLIENT_TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('autopeft.token')") == CLIENT_TOKEN
    # a token that stops working (revoked, server restarted with others): the next poll
    # gets 401 and the login comes back, the bad token forgotten
    page.evaluate("sessionStorage.setItem('autopeft.token', 'revoked')")
    page.wait_for_selector("#login-view:not([hidden])", timeout=LIVE_MS)
    assert "Signed out" in page.inner_text("#login-error")
    assert page.evaluate("sessionStorage.getItem('autopeft.token')") is None
    # a worker token is refused with a reason (403: not a client)
    sign_in(page, server.base_url, token=WORKER_TOKEN)
    page.wait_for_selector("#login-error:has-text('no reader role')")


def test_the_pareto_plot_shows_the_apis_front_and_the_pending_trials(
        page: Any, server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, trials=10)
        held = [take_lease(http) for _ in range(8)]
        scores = [0.62, 0.91, 0.70, 0.88, 0.55, 0.93, 0.81, 0.77]
        for trial, score in zip(held[:6], scores, strict=False):
            report_result(http, trial, score)
        front = http.get(f"/v1/studies/{study['id']}/pareto", headers=CLIENT).json()
        counts = http.get(f"/v1/studies/{study['id']}", headers=CLIENT).json()["counts"]
    sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
    page.wait_for_selector("#pareto circle.point")
    front_numbers = sorted(int(n) for n in page.eval_on_selector_all(
        "#pareto circle.front", "nodes => nodes.map(n => n.dataset.trial)"))
    assert front_numbers == sorted(t["number"] for t in front["trials"])
    assert page.locator("#pareto circle.point").count() == counts["completed"] == 6
    assert page.locator("#pareto path.pending.leased").count() == counts["leased"] == 2
    assert page.locator("#pareto path.pending.ready").count() == counts["ready"] == 2
    # the staircase runs through the front
    assert page.locator("#pareto path.staircase").count() == 1
    # hovering a point shows its configuration and dev score
    best = max(front["trials"], key=lambda t: t["objective"])
    page.hover(f"#pareto circle[data-trial='{best['number']}']")
    tip = page.inner_text("#tooltip")
    assert best["config_description"] in tip and "dev score" in tip
    # ... and both shares, the objective (deployed, the default) marked
    shares = re.search(r"deployed share (\S+) % \(objective\) · trainable share (\S+) %$",
                       tip, re.MULTILINE)
    assert shares, tip
    assert float(shares[1]) == pytest.approx(best["deployed_share"], rel=1e-2)
    assert float(shares[2]) == pytest.approx(best["trainable_share"], rel=1e-2)
    # hypervolume against completed trials: one step per completed trial
    assert page.locator("#hypervolume circle.hv-point").count() == 6


def test_the_trial_table_updates_after_a_report_without_a_reload(
        page: Any, server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, trials=3)
        held = take_lease(http, worker="gpu-7")
        sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
        row = f"#trials tr[data-trial='{held['number']}']"
        page.wait_for_selector(f"{row} .badge.leased")
        page.wait_for_selector("#workers tr[data-worker='gpu-7']:has-text('#')")
        page.evaluate("window.notReloaded = true")
        report_result(http, held, 0.8125)
        reported = time.monotonic()
        page.wait_for_selector(f"{row} .badge.completed", timeout=LIVE_MS)
        assert time.monotonic() - reported < LIVE_MS / 1000
        assert page.inner_text(f"{row} td.score") == "0.8125"
        # both shares, side by side; the objective's header starred
        trial = next(t for t in http.get(f"/v1/studies/{study['id']}/trials",
                                         headers=CLIENT).json()["items"]
                     if t["number"] == held["number"])
        for name in ("deployed", "trainable"):
            shown = float(page.inner_text(f"{row} td.share.{name}"))
            assert shown == pytest.approx(trial[f"{name}_share"], rel=1e-2), name
        assert page.inner_text("#trials th[data-share='deployed']") == "deployed % \u2605"
        assert page.inner_text("#trials th[data-share='trainable']") == "trainable %"
        assert page.evaluate("window.notReloaded") is True
        page.wait_for_selector("#study-counts [data-count='completed'] .value:has-text('1')",
                               timeout=LIVE_MS)


def test_sort_filter_and_cancel(page: Any, server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, trials=6)
        held = [take_lease(http) for _ in range(4)]
        for trial, score in zip(held, [0.7, 0.9, 0.6, 0.8], strict=True):
            report_result(http, trial, score)
        sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
        page.wait_for_selector("#trials tbody tr .badge.completed")
        page.wait_for_function("document.querySelectorAll('#trials tbody tr').length === 6")
        page.click("#trials th[data-key='objective']")
        page.click("#trials th[data-key='objective']")  # descending
        scores = page.eval_on_selector_all(
            "#trials tbody tr td.score", "cells => cells.map(c => c.textContent)")
        assert scores[:4] == ["0.9000", "0.8000", "0.7000", "0.6000"]
        assert scores[4:] == ["-", "-"]  # unscored trials last
        page.select_option("#state-filter", "completed")
        assert page.locator("#trials tbody tr").count() == 4
        page.fill("#trial-filter", "0.9000")
        assert page.locator("#trials tbody tr").count() == 1
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#cancel")
        page.wait_for_selector("#cancel[hidden]", state="attached", timeout=LIVE_MS)
        assert http.get(f"/v1/studies/{study['id']}",
                        headers=CLIENT).json()["state"] == "cancelled"


def test_the_pages_work_behind_a_path_prefix_and_never_put_the_token_in_a_url(
        page: Any, server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, name="behind a proxy")
    with PrefixProxy(server.base_url) as proxy:
        page.goto(f"{proxy.base_url}/ui")  # the relative redirect keeps the prefix
        page.wait_for_selector("#login-view:not([hidden])")
        assert page.url == f"{proxy.base_url}/ui/"
        page.fill("#token", CLIENT_TOKEN)
        page.click("#login-form button[type=submit]")
        page.click(f"#studies tr[data-study='{study['id']}'] a")
        page.wait_for_selector("#study-name:has-text('behind a proxy')")
        page.wait_for_selector("#pareto path.pending.ready")  # the plot drew through the proxy
    api_urls = [url for url in proxy.urls if "/autopeft/v1/" in url]
    assert any(url.endswith(f"/autopeft/v1/studies/{study['id']}") for url in api_urls)
    assert all(CLIENT_TOKEN not in url for url in proxy.urls)


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 1000}])
def test_a_screenshot_of_the_study_page_renders(page: Any, server: ServerThread,
                                                tmp_path: Any, viewport: dict) -> None:
    """The page renders to an image (docs/dashboard.png is made the same way by
    scripts/dashboard_screenshot.py, with a longer study)."""
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, trials=4)
        report_result(http, take_lease(http), 0.8)
    page.set_viewport_size(viewport)
    sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
    page.wait_for_selector("#pareto circle.front")
    shot = tmp_path / "study.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def heartbeat(http: httpx.Client, lease: dict[str, Any], progress: dict[str, Any]) -> None:
    """A worker's heartbeat with training progress on ``lease``; asserts 200."""
    response = http.post(f"/v1/trials/{lease['trial_id']}/heartbeat", headers=WORKER,
                         json={"token": lease["token"], "progress": progress})
    assert response.status_code == 200, response.text


def ran_seconds(text: str) -> float:
    """The trial table's "ran" cell (``fmt.seconds``: "4.2 s", "12 s", "3 min 5 s")."""
    minutes = float(text.split(" min")[0]) if " min" in text else 0.0
    return 60 * minutes + float(text.split(" min ")[-1].removesuffix(" s"))


def test_a_running_trial_shows_its_step_loss_and_time_since_its_lease(
        page: Any, server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, trials=2)
        held = take_lease(http, worker="gpu-3")
        heartbeat(http, held, {"step": 30, "total_steps": 120, "loss": 0.43217})
        sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
        row = f"#trials tr[data-trial='{held['number']}']"
        page.wait_for_selector(f"{row} td.progress:has-text('step 30/120')")
        assert page.inner_text(f"{row} td.progress").strip() == "step 30/120 · loss 0.4322"
        assert page.get_attribute(f"{row} td.progress progress", "value") == "0.250"
        first = ran_seconds(page.inner_text(f"{row} td.ran"))
        assert 0 <= first < 60
        # the next heartbeat shows without a reload, and the elapsed time moves on
        heartbeat(http, held, {"step": 90, "total_steps": 120, "loss": 0.25})
        page.wait_for_selector(f"{row} td.progress:has-text('step 90/120 · loss 0.25')",
                               timeout=LIVE_MS)
        page.wait_for_function(
            f"s => parseFloat(document.querySelector(\"{row} td.ran\").textContent) > s",
            arg=first, timeout=LIVE_MS)
        # a finished trial's progress is history: its ran time is lease to report
        report_result(http, held, 0.8)
        page.wait_for_selector(f"{row} .badge.completed", timeout=LIVE_MS)
        assert page.inner_text(f"{row} td.progress").strip() == "-"
        (trial,) = [t for t in http.get(f"/v1/studies/{study['id']}/trials",
                                        headers=CLIENT).json()["items"]
                    if t["id"] == held["trial_id"]]
        assert ran_seconds(page.inner_text(f"{row} td.ran")) == pytest.approx(
            trial["finished_at"] - trial["leased_at"], abs=0.06)


def _two_studies(http: httpx.Client) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Study ``first`` whose three trials ``busy`` (2) and ``other`` (1) ran, and study
    ``second`` where ``busy`` ran three and holds a fourth now (returned)."""
    budget = {"total_trials": 3, "initial_trials": 3, "max_parallel": 3, "max_attempts": 2}
    first = submit(http, trials=3, name="first")
    for worker in ("busy", "busy", "other"):
        report_result(http, take_lease(http, worker), 0.7)
    second = http.post("/v1/studies", headers=CLIENT, json=study_spec(
        name="second", budget={**budget, "total_trials": 4, "initial_trials": 4,
                               "max_parallel": 4})).json()
    for _ in range(3):
        report_result(http, take_lease(http, "busy"), 0.6)
    running = take_lease(http, "busy")
    assert running["study_id"] == second["id"]
    return first, second, running


def test_a_worker_running_another_studys_trial_is_not_shown_idle(
        page: Any, server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        first, second, running = _two_studies(http)
    sign_in(page, server.base_url, route=f"#/studies/{first['id']}")
    busy = "#workers tr[data-worker='busy']"
    page.wait_for_selector(busy)
    assert page.inner_text(f"{busy} td.current") \
        == f"#{running['number']} (study {second['id']})"
    assert page.inner_text("#workers tr[data-worker='other'] td.current") == "idle"


def test_a_worker_the_trial_table_shows_running_is_not_idle_in_an_older_answer(
        page: Any, server: ServerThread) -> None:
    """The workers answer and the trial list are read a moment apart: a workers answer
    read just before the lease (simulated: its trials emptied) must not draw the worker
    idle beside a table that shows it running the trial."""
    import json

    def before_the_lease(route: Any) -> None:
        answer = route.fetch()
        body = answer.json()
        for worker in body["items"]:
            worker["trials"] = []
        route.fulfill(response=answer, body=json.dumps(body))

    page.route("**/v1/workers?*", before_the_lease)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, trials=2)
        held = take_lease(http, worker="gpu-5")
    sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
    page.wait_for_selector(f"#trials tr[data-trial='{held['number']}'] .badge.leased")
    page.wait_for_selector("#workers tr[data-worker='gpu-5']")
    assert page.inner_text("#workers tr[data-worker='gpu-5'] td.current") \
        == f"#{held['number']}"


def test_worker_rows_count_this_studys_trials_and_label_the_total(
        page: Any, server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        first, second, _running = _two_studies(http)
    counts = "el => [el.querySelector('td.study-trials').textContent, " \
             "el.querySelector('td.leases').textContent]"
    sign_in(page, server.base_url, route=f"#/studies/{first['id']}")
    page.wait_for_selector("#workers tr[data-worker='other']")
    assert page.inner_text("#workers thead").strip().split("\t")[-2:] \
        == ["trials here", "leases (all studies)"]
    assert page.eval_on_selector("#workers tr[data-worker='busy']", counts) == ["2", "6"]
    assert page.eval_on_selector("#workers tr[data-worker='other']", counts) == ["1", "1"]
    page.evaluate(f"location.hash = '#/studies/{second['id']}'")
    page.wait_for_selector("#study-name:has-text('second')")
    page.wait_for_function("document.querySelectorAll('#workers tbody tr').length === 1")
    assert page.eval_on_selector("#workers tr[data-worker='busy']", counts) == ["4", "6"]


def test_a_refresh_asked_during_a_poll_waits_for_it(page: Any, server: ServerThread) -> None:
    """Polls never overlap (the cancel button asks for one at any time): an older poll's
    answers could land after a newer one's and draw the older state over it."""
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, trials=2)
    sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
    page.wait_for_selector("#pareto path.pending")
    page.evaluate("""() => {
      const original = window.fetch;
      Object.assign(window, {inFlight: 0, mostInFlight: 0, polls: 0});
      window.fetch = async (url, options) => {
        if (!String(url).endsWith("/pareto")) return original(url, options);
        window.polls += 1;
        window.mostInFlight = Math.max(window.mostInFlight, ++window.inFlight);
        try { return await original(url, options); } finally { window.inFlight -= 1; }
      };
    }""")
    page.evaluate("poll(); poll(); poll();")
    page.wait_for_function("() => window.polls >= 3", timeout=LIVE_MS)
    assert page.evaluate("window.mostInFlight") == 1


#: The model front's point text: "mean [low, high]" (fmt.interval).
INTERVAL = re.compile(r"^(\d\.\d{4}) \[(\d\.\d{4}), (\d\.\d{4})\]$")


def test_the_switch_shows_the_model_front_with_intervals_or_the_apis_note(
        page: Any, server: ServerThread) -> None:
    """Observed is the default; the model front draws each point's 90 % interval as an
    error bar and shows mean [low, high] in the front table and the tooltip; below the
    model's minimum of observations the API's note shows over the observed front."""
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, trials=6)
        held = [take_lease(http) for _ in range(5)]
        for trial, score in zip(held[:2], [0.62, 0.81], strict=True):
            report_result(http, trial, score)
        sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
        page.wait_for_selector("#front tbody tr")
        assert page.input_value("#front-choice") == "observed"
        assert not page.is_visible("#front-note")
        # two observations: the model falls back to the observed front with the API's note
        page.select_option("#front-choice", "model")
        page.wait_for_selector("#front-note:not([hidden])", timeout=LIVE_MS)
        assert "at least 3 observations" in page.inner_text("#front-note")
        assert page.locator("#pareto .errorbar").count() == 0
        assert all(re.fullmatch(r"\d\.\d{4}", text) for text in page.eval_on_selector_all(
            "#front td.score", "cells => cells.map(c => c.textContent)"))
        # three more: the model front, polled live (a GP fit: allow it longer)
        for trial, score in zip(held[2:], [0.70, 0.93, 0.77], strict=True):
            report_result(http, trial, score)
        page.wait_for_selector("#pareto g.errorbar", timeout=60_000)
        model = http.get(f"/v1/studies/{study['id']}/pareto", params={"front": "model"},
                         headers=CLIENT).json()
    assert model["front"] == "model" and model["note"] is None
    # a poll between the reports may have drawn a front of fewer observations first
    expected = sorted([t["number"], t["predicted"]["low"], t["predicted"]["high"]]
                      for t in model["trials"])
    page.wait_for_function("""expected => JSON.stringify([...document.querySelectorAll(
        '#pareto g.errorbar')].map(n => [Number(n.dataset.trial), Number(n.dataset.low),
        Number(n.dataset.high)]).sort((a, b) => a[0] - b[0])) === JSON.stringify(expected)""",
                           arg=expected, timeout=LIVE_MS)
    assert page.is_hidden("#front-note")
    numbers = sorted(t["number"] for t in model["trials"])
    bars = page.eval_on_selector_all("#pareto g.errorbar", "nodes => nodes.map(n => "
                                     "[Number(n.dataset.trial), n.querySelectorAll('line').length])")
    assert sorted(number for number, _lines in bars) == numbers
    assert all(lines == 3 for _number, lines in bars)  # the bar and its two caps
    assert sorted(int(n) for n in page.eval_on_selector_all(
        "#pareto circle.front.predicted", "nodes => nodes.map(n => n.dataset.trial)")) == numbers
    # the table: mean [low, high] as the API gives them, the observed score beside it
    assert "predicted score" in page.inner_text("#front-score-head")
    for trial in model["trials"]:
        row = f"#front tr[data-trial='{trial['number']}']"
        shown = INTERVAL.match(page.inner_text(f"{row} td.score.predicted"))
        assert shown, page.inner_text(row)
        p = trial["predicted"]
        assert [float(v) for v in shown.groups()] == pytest.approx(
            [p["mean"], p["low"], p["high"]], abs=6e-5)
        assert page.inner_text(f"{row} td.observed") == f"{trial['objective']:.4f}"
    # the tooltip of a point: its interval
    first = model["trials"][0]
    page.hover(f"#pareto circle.predicted[data-trial='{first['number']}']")
    tip = page.inner_text("#tooltip")
    cell = page.inner_text(f"#front tr[data-trial='{first['number']}'] td.score")
    assert f"predicted {cell} (mean [90 % interval], full training)" in tip, tip
    # back to observed: no bars, plain scores
    page.select_option("#front-choice", "observed")
    page.wait_for_function("() => document.querySelectorAll('#pareto .errorbar').length === 0",
                           timeout=LIVE_MS)
    assert page.locator("#front td.predicted").count() == 0
    assert page.locator("#pareto circle.point").count() == 5


def _pause(http: httpx.Client, lease: dict[str, Any], score: float, step: int = 3) -> None:
    """A fidelity lease's checkpoint, then its result at a level below 1: paused."""
    import hashlib
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = f"trial {lease['trial_id']}".encode()
        info = tarfile.TarInfo("checkpoint.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    body = buffer.getvalue()
    stored = http.put(f"/v1/trials/{lease['trial_id']}/checkpoint", content=body, headers={
        **WORKER, "X-Lease-Token": lease["token"], "X-Checkpoint-Step": str(step),
        "X-Artifact-SHA256": hashlib.sha256(body).hexdigest()})
    assert stored.status_code == 200, stored.text
    answer = http.post(f"/v1/trials/{lease['trial_id']}/result", headers=WORKER, json={
        "token": lease["token"], "result": lease_result(lease, score, steps=step)})
    assert answer.status_code == 200 and answer.json()["state"] == "paused", answer.text


def _wait_for_state(http: httpx.Client, study_id: int, trial_id: int, state: str,
                    timeout: float = 30) -> None:
    """Poll the study's trials until ``trial_id`` is in ``state``; fails after ``timeout`` s."""
    import time

    end = time.monotonic() + timeout
    while True:
        items = http.get(f"/v1/studies/{study_id}/trials", headers=CLIENT).json()["items"]
        seen = next(t["state"] for t in items if t["id"] == trial_id)
        if seen == state:
            return
        assert time.monotonic() < end, f"trial {trial_id} still {seen}, not {state}"
        time.sleep(0.05)


def test_a_fidelity_studys_trials_show_their_level_and_scores_by_level(
        page: Any, server: ServerThread) -> None:
    """eta 2 at levels 1/3 and 1: the better of two trials continues (leased at level 1,
    its 1/3 score listed), the dominated one stays paused."""
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        budget = {"total_trials": 3, "initial_trials": 3, "max_parallel": 2}
        response = http.post("/v1/studies", headers=CLIENT, json=study_spec(
            budget=budget, fidelity={"levels": [1 / 3, 1.0], "eta": 2.0}))
        assert response.status_code == 201, response.text
        study = response.json()
        leases = [take_lease(http), take_lease(http)]
        shares = {t["id"]: t["param_share"] for t in http.get(
            f"/v1/studies/{study['id']}/trials", headers=CLIENT).json()["items"]}
        better, worse = sorted(leases, key=lambda lease: shares[lease["trial_id"]])
        _pause(http, better, 0.9)
        # the proposer continues a paused trial on its own pass: wait for that, or a lease
        # taken first gets the study's third (ready) trial instead (CI flake at 4f3fddf)
        _wait_for_state(http, study["id"], better["trial_id"], "ready")
        continued = take_lease(http)
        assert continued["trial_id"] == better["trial_id"]
        _pause(http, worse, 0.1)
    sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
    paused = f"#trials tr[data-trial='{worse['number']}']"
    running = f"#trials tr[data-trial='{better['number']}']"
    page.wait_for_selector(f"{paused} .badge.paused")
    page.wait_for_selector(f"{running} .badge.leased")
    assert page.is_visible("#trials th.fidelity")
    # the paused badge is styled like the other states (its own colour)
    colours = page.eval_on_selector_all(
        "#trials .badge", "nodes => nodes.map(n => [n.textContent, "
        "getComputedStyle(n).backgroundColor])")
    by_state = dict(colours)
    unstyled = "rgb(233, 236, 239)"  # .badge without a state rule
    assert by_state["paused"] != unstyled, colours
    assert by_state["paused"] not in {c for name, c in colours if name != "paused"}, colours
    cell = f"{paused} td.fidelity"
    assert page.inner_text(f"{cell}").split("\n")[0] == "0.333"
    assert page.inner_text(f"{cell} .observations") == "0.333: 0.1000"
    assert page.get_attribute(cell, "title").endswith("\n0.333: 0.1000")
    assert page.inner_text(f"{running} td.fidelity").split("\n")[0] == "1"
    assert page.inner_text(f"{running} td.fidelity .observations") == "0.333: 0.9000"
    page.select_option("#state-filter", "paused")
    assert page.locator("#trials tbody tr").count() == 1


def test_a_study_without_fidelity_hides_the_level_column(page: Any, server: ServerThread) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        study = submit(http, trials=2)
        report_result(http, take_lease(http), 0.8)
    sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
    page.wait_for_selector("#trials .badge.completed")
    assert page.locator("#trials td.fidelity").count() == 2
    assert not page.is_visible("#trials th.fidelity")
    assert not page.is_visible("#trials td.fidelity")


def test_a_replicate_is_marked_in_the_trials_table(page: Any, server: ServerThread) -> None:
    """A replicate (the same configuration trained again with another seed) says so next to
    its generator; the configuration's first trial does not."""
    from autopeft_service.storage import repository as repo
    from autopeft_service.storage.database import Database

    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        response = http.post("/v1/studies", headers=CLIENT, json=study_spec(
            budget={"total_trials": 6, "initial_trials": 2, "max_parallel": 2}))
        assert response.status_code == 201, response.text
        study = response.json()
        first = take_lease(http)
        database = Database(server.settings.database_url, pool_size=1)
        try:
            with database.session() as session:
                again = repo.Proposal(first["params"], first["config"], "test", replicate=True)
                [row] = repo.add_trials(session, study["id"], [again], max_new=1)
                number = row.number
        finally:
            database.dispose()
    sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
    marked = f"#trials tr[data-trial='{number}'] td.generator .replicate"
    page.wait_for_selector(marked, timeout=LIVE_MS)
    assert page.inner_text(marked).strip() == "· replicate 1"
    assert page.locator(f"#trials tr[data-trial='{first['number']}'] .replicate").count() == 0


def _seed_warmed_study(server: ServerThread) -> tuple[dict[str, Any], dict[str, Any]]:
    """A source study of three completed trials and a study seeded from it."""
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        source = submit(http, trials=3)
        for score in (0.7, 0.9, 0.8):
            report_result(http, take_lease(http), score)
        response = http.post("/v1/studies", headers=CLIENT, json=study_spec(
            name="warm", budget={"total_trials": 6, "initial_trials": 3, "max_parallel": 1},
            warm_start={"from_studies": [source["id"]], "mode": "seed"}))
        assert response.status_code == 201, response.text
        study = response.json()
    return source, study


def test_a_warm_started_study_names_its_sources_and_marks_transferred_trials(
        page: Any, server: ServerThread) -> None:
    source, study = _seed_warmed_study(server)
    sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
    page.wait_for_selector(f"#study-warm a[data-source='{source['id']}']", timeout=LIVE_MS)
    assert page.inner_text("#study-warm").startswith(f"warm start (seed) from study {source['id']}")
    page.wait_for_selector("#trials tbody tr", timeout=LIVE_MS)
    generators = page.eval_on_selector_all("#trials td.generator",
                                           "cells => cells.map(c => c.textContent)")
    assert any(g.startswith(f"transfer:{source['id']}#") for g in generators), generators
    page.click(f"#study-warm a[data-source='{source['id']}']")
    page.wait_for_function(f"() => location.hash === '#/studies/{source['id']}'",
                           timeout=LIVE_MS)


def test_a_model_warm_start_shows_the_learnt_correlation_and_the_guards_verdict(
        page: Any, server: ServerThread) -> None:
    """The study view's transfer report, as the proposer stores it, on the warm line."""
    from autopeft_service.storage import repository as repo
    from autopeft_service.storage.database import Database

    source, study = _seed_warmed_study(server)
    database = Database(server.settings.database_url, pool_size=1)
    try:
        with database.session() as session:
            repo.record_transfer(session, study["id"], {
                "correlations": {str(source["id"]): 0.8123}, "predictive": {},
                "dropped": [], "used": True, "target_trials": 2, "at": 0.0})
    finally:
        database.dispose()
    sign_in(page, server.base_url, route=f"#/studies/{study['id']}")
    page.wait_for_selector("#study-warm .transfer[data-used='true']", timeout=LIVE_MS)
    assert page.inner_text("#study-warm .transfer") == (
        f"; learnt task correlation: study {source['id']} 0.81")
    database = Database(server.settings.database_url, pool_size=1)
    try:
        with database.session() as session:  # the guard's verdict, at a later proposal
            repo.record_transfer(session, study["id"], {
                "correlations": {}, "predictive": {str(source["id"]): 0.05},
                "dropped": [source["id"]], "used": False, "target_trials": 8, "at": 1.0})
    finally:
        database.dispose()
    page.wait_for_selector("#study-warm .transfer[data-used='false']", timeout=LIVE_MS)
    assert "guard dropped every source" in page.inner_text("#study-warm .transfer")
