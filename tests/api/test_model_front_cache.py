"""The model front's fits run in the background, one per study at a time, and a reader
waits for one at most ``model_front_wait_seconds`` (``api.model_front_cache``).

The cache's own tests inject a fake fit (threads, no torch); the API's run a real server
with ``proposer_processes=0`` (fits in a thread, so the fake need not be pickled) and the
server's cache's fit replaced by a fake one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest

from autopeft_service.api.model_front_cache import (
    MAX_WAITERS,
    ModelFrontCache,
    Predictions,
    model_fronts,
)
from autopeft_service.domain.spaces import SearchSpaceBase
from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.prediction import PredictedScore, ScoreObservation
from autopeft_service.testing.server import ServerThread
from tests.api.conftest import CLIENT, create_study, report_result, study_spec, take_lease

SPACE = StudySpec.model_validate(study_spec()).space


def observations(*scores: float) -> list[ScoreObservation]:
    """One full-training observation a score, trial ids 1, 2, ..."""
    return [ScoreObservation(i + 1, {}, 1.0, s) for i, s in enumerate(scores)]


class FakeFit:
    """A fit that counts its calls, may wait for ``release`` or sleep, and predicts each
    trial's score as its mean (or raises ``fail`` while it is set)."""

    def __init__(self, seconds: float = 0.0, gated: bool = False) -> None:
        self.seconds = seconds
        self.release = threading.Event()
        if not gated:
            self.release.set()
        self.calls = 0
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def __call__(self, _space: SearchSpaceBase, seen: Sequence[ScoreObservation]
                 ) -> Predictions:
        with self._lock:
            self.calls += 1
        self.release.wait(30)
        time.sleep(self.seconds)
        if self.fail is not None:
            raise self.fail
        return {o.trial_id: PredictedScore(o.score, o.score - 0.01, o.score + 0.01, 0.9)
                for o in seen}


@pytest.fixture
def cache_of() -> Iterator[Callable[..., ModelFrontCache]]:
    """Caches fitting in a thread with a given fake fit; after the test, the fits are let
    go (a gated fit would hold its thread) and the caches closed."""
    made: list[tuple[ModelFrontCache, FakeFit]] = []

    def make(fit: FakeFit, wait_seconds: float, **options: Any) -> ModelFrontCache:
        cache = ModelFrontCache(wait_seconds, processes=False, predict=fit, **options)
        made.append((cache, fit))
        return cache

    yield make
    for cache, fit in made:
        fit.release.set()
        cache.close()


def until_fresh(cache: ModelFrontCache, study: int, seen: list[ScoreObservation],
                timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not cache.lookup(study, SPACE, seen).fresh:
        assert time.monotonic() < end, "the fit never ended"
        time.sleep(0.02)


def test_concurrent_readers_of_a_stale_study_start_one_fit(cache_of) -> None:
    fit = FakeFit(gated=True)
    cache = cache_of(fit, wait_seconds=0.3)
    seen = observations(0.6, 0.7, 0.8)
    answers: list[Any] = []
    start = threading.Barrier(12)

    def read() -> None:
        start.wait()
        answers.append(cache.lookup(1, SPACE, seen))

    readers = [threading.Thread(target=read) for _ in range(12)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(10)
    assert len(answers) == 12 and not any(a.fresh or a.fit for a in answers)
    assert fit.calls == 1
    fit.release.set()
    until_fresh(cache, 1, seen)
    assert fit.calls == 1  # the readers after the fit got its predictions, fitting none
    assert cache.lookup(1, SPACE, seen).fit.predictions[3].mean == 0.8


def test_a_fit_in_flight_for_older_observations_is_not_doubled(cache_of) -> None:
    fit = FakeFit(gated=True)
    cache = cache_of(fit, wait_seconds=0.0)
    older, newer = observations(0.6, 0.7, 0.8), observations(0.6, 0.7, 0.8, 0.9)
    cache.lookup(1, SPACE, older)
    assert not cache.lookup(1, SPACE, newer).fresh and fit.calls == 1
    fit.release.set()
    until_fresh(cache, 1, newer)
    assert fit.calls == 2


def test_a_read_waits_at_most_the_wait_then_gets_the_older_predictions(cache_of) -> None:
    fit = FakeFit(seconds=1.5)
    cache = cache_of(fit, wait_seconds=0.3)
    seen = observations(0.6, 0.7, 0.8)
    began = time.monotonic()
    first = cache.lookup(1, SPACE, seen)
    assert time.monotonic() - began < 1.2
    assert not first.fresh and first.fit is None and first.error is None
    until_fresh(cache, 1, seen)
    more = [*seen, ScoreObservation(4, {}, 1.0, 0.9)]
    began = time.monotonic()
    stale = cache.lookup(1, SPACE, more)
    assert time.monotonic() - began < 1.2
    assert not stale.fresh and stale.fit is not None
    assert stale.fit.observations == 3 and set(stale.fit.predictions) == {1, 2, 3}
    until_fresh(cache, 1, more)
    assert fit.calls == 2


def test_a_long_enough_wait_gets_the_fresh_predictions_at_once(cache_of) -> None:
    cache = cache_of(FakeFit(seconds=0.2), wait_seconds=10)
    answer = cache.lookup(1, SPACE, observations(0.6, 0.7, 0.8))
    assert answer.fresh and answer.fit is not None and answer.fit.observations == 3


def test_readers_beyond_the_waiters_answer_at_once(cache_of) -> None:
    """Only MAX_WAITERS request threads wait for a fit: the others are not held."""
    fit = FakeFit(gated=True)
    cache = cache_of(fit, wait_seconds=5)
    seen = observations(0.6, 0.7, 0.8)
    waiting = [threading.Thread(target=cache.lookup, args=(1, SPACE, seen))
               for _ in range(MAX_WAITERS)]
    for thread in waiting:
        thread.start()
    # until every waiter holds its slot (a fixed sleep raced with a loaded machine)
    end = time.monotonic() + 10
    while cache._waiters._value > 0:
        assert time.monotonic() < end, "the waiting lookups never took their slots"
        time.sleep(0.01)
    began = time.monotonic()
    assert not cache.lookup(1, SPACE, seen).fresh
    assert time.monotonic() - began < 1
    fit.release.set()
    for thread in waiting:
        thread.join(10)
    assert fit.calls == 1


def test_a_failed_fit_is_reported_and_the_next_read_tries_again(cache_of) -> None:
    fit = FakeFit()
    fit.fail = RuntimeError("singular covariance")
    cache = cache_of(fit, wait_seconds=5)
    seen = observations(0.6, 0.7, 0.8)
    failed = cache.lookup(1, SPACE, seen)
    assert not failed.fresh and failed.error == "RuntimeError: singular covariance"
    fit.fail = None
    assert cache.lookup(1, SPACE, seen).fresh and fit.calls == 2


def test_only_the_latest_studies_are_kept(cache_of) -> None:
    fit = FakeFit()
    cache = cache_of(fit, wait_seconds=5, kept=2)
    seen = observations(0.6, 0.7, 0.8)
    for study in (1, 2, 1, 3):  # 2 is then the least recently asked
        assert cache.lookup(study, SPACE, seen).fresh
    assert fit.calls == 3
    assert cache.lookup(1, SPACE, seen).fresh and fit.calls == 3
    assert cache.lookup(2, SPACE, seen).fresh and fit.calls == 4


# --- over HTTP ---------------------------------------------------------------------------

@pytest.fixture
def fake_fit(monkeypatch: pytest.MonkeyPatch) -> FakeFit:
    """The server's fits replaced by a fake taking 1.5 s (the servers run them in a
    thread: ``proposer_processes=0``)."""
    fit = FakeFit(seconds=1.5)
    monkeypatch.setattr(model_fronts, "predict", fit)
    return fit


def _model_front(http: httpx.Client, study_id: int) -> tuple[dict[str, Any], float]:
    began = time.monotonic()
    response = http.get(f"/v1/studies/{study_id}/pareto", params={"front": "model"},
                        headers=CLIENT)
    assert response.status_code == 200, response.text
    return response.json(), time.monotonic() - began


def _until_fresh(http: httpx.Client, study_id: int, timeout: float = 20) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        body, _seconds = _model_front(http, study_id)
        if body["front"] == "model" and body["note"] is None:
            return body
        assert time.monotonic() < end, body["note"]
        time.sleep(0.1)


def _server(make_server: Callable[..., ServerThread], wait: float) -> httpx.Client:
    server = make_server(proposer_processes=0, model_front_wait_seconds=wait)
    return httpx.Client(base_url=server.base_url, timeout=30)


def test_the_api_answers_within_the_wait_then_the_fresh_front(make_server, fake_fit) -> None:
    with _server(make_server, wait=0.3) as http:
        study = create_study(http, budget={"total_trials": 6, "initial_trials": 6,
                                           "max_parallel": 6})
        for score in (0.6, 0.7, 0.8):
            report_result(http, take_lease(http), score)
        first, seconds = _model_front(http, study["id"])
        assert seconds < 1.3, seconds
        assert first["front"] == "observed" and "being fitted on the study's 3" in first["note"]
        assert first["model_status"] == "fitting"
        assert len(first["trials"]) >= 1
        fresh = _until_fresh(http, study["id"])
        assert {t["predicted"]["mean"] for t in fresh["trials"]} <= {0.6, 0.7, 0.8}
        report_result(http, take_lease(http), 0.9)
        stale, seconds = _model_front(http, study["id"])
        assert seconds < 1.3, seconds
        assert stale["front"] == "model"
        assert stale["note"] == "model front fitted on 3 of 4 observations; a refit is running"
        assert stale["model_status"] == "refitting"
        assert all(t["predicted"] is not None for t in stale["trials"])
        assert 0.9 in {t["predicted"]["mean"] for t in _until_fresh(http, study["id"])["trials"]}
    assert fake_fit.calls == 2


def test_a_failed_fit_gives_the_observed_front_with_a_note(make_server, fake_fit) -> None:
    fake_fit.seconds = 0.0
    fake_fit.fail = RuntimeError("singular covariance")
    with _server(make_server, wait=5) as http:
        study = create_study(http, budget={"total_trials": 6, "initial_trials": 6,
                                           "max_parallel": 6})
        for score in (0.6, 0.7, 0.8):
            report_result(http, take_lease(http), score)
        failed, _seconds = _model_front(http, study["id"])
        assert failed["front"] == "observed"
        assert "model fit failed (RuntimeError: singular covariance)" in failed["note"]
        assert failed["model_status"] == "failed"
        fake_fit.fail = None
        assert _model_front(http, study["id"])[0]["note"] is None
    assert fake_fit.calls == 2
