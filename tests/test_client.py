"""The user-facing Python client against a real server (uvicorn thread, SQLite file) with
fake workers completing the studies. ``tests/cli/test_studies.py`` reuses the helpers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from autopeft_service.client import (
    AutopeftClient,
    ClientError,
    ended_trials,
    format_detail,
    load_spec,
)
from autopeft_service.core.config import Settings
from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.study import StudySpec
from autopeft_service.domain.views import ParetoOut, StudyOut, TrialSummary
from autopeft_service.local import free_port
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerThread
from workers.client import ServerClient
from workers.fake_worker import FakeWorker

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SYNTHETIC_EXAMPLE = EXAMPLES / "study_synthetic_minilm.yaml"


def small_spec(**overrides: Any) -> dict[str, Any]:
    """A valid study on MiniLM-sized dimensions with a small budget."""
    spec: dict[str, Any] = {
        "name": "client test", "backbone": "/models/minilm-l6", "task": "synthetic",
        "backbone_dims": MINILM_DIMS.model_dump(),
        "search_space": {"kind": "autopeft"},
        "budget": {"total_trials": 6, "initial_trials": 3, "max_parallel": 3,
                   "max_attempts": 2},
        "optimizer": {"name": "sobol"},  # the client is under test, not the model
    }
    spec.update(overrides)
    return spec


def start_server(tmp: Path) -> ServerThread:
    """A real server on a fresh SQLite file, tuned to react fast."""
    settings = Settings(database_url=f"sqlite:///{tmp / 'autopeft.db'}",
                        client_tokens=[CLIENT_TOKEN], worker_tokens=[WORKER_TOKEN],
                        long_poll_seconds=0.3, proposer_poll_seconds=0.1,
                        sweep_interval_seconds=0.2, port=0, artifact_dir=str(tmp / "artifacts"))
    return ServerThread(settings).__enter__()


class Workers:
    """Fake workers in threads, leasing until ``stop()`` (a context manager)."""

    def __init__(self, base_url: str, count: int = 3) -> None:
        self.stop_event = threading.Event()
        self.clients = [ServerClient(base_url, WORKER_TOKEN, f"fake{i}", stop=self.stop_event)
                        for i in range(count)]
        self.threads = [threading.Thread(
            target=FakeWorker(client).run, daemon=True,
            kwargs={"idle_rounds": 10**9, "wait_seconds": 0.3, "stop": self.stop_event})
            for client in self.clients]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(15)
        for client in self.clients:
            client.close()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = start_server(tmp_path_factory.mktemp("client-server"))
    yield running
    running.__exit__(None, None, None)


@pytest.fixture
def client(server: ServerThread) -> Iterator[AutopeftClient]:
    with AutopeftClient(server.base_url, CLIENT_TOKEN, timeout=10, page_size=4) as user:
        yield user


def _study(state: str) -> StudyOut:
    """A study reading in ``state``, with no trials (for a monkeypatched ``status``)."""
    return StudyOut(id=1, name="s", state=state, created_at=0.0, updated_at=0.0, counts={},
                    total_trials=1, best=None, hypervolume=0.0, pareto_size=0,
                    spec=small_spec())


# --------------------------------------------------------------------------- happy paths


def test_submit_yaml_watch_trials_pareto(server: ServerThread, client: AutopeftClient) -> None:
    study = client.submit(str(SYNTHETIC_EXAMPLE))
    assert study.state == "running" and study.total_trials == 10
    assert isinstance(study, StudyOut) and study.spec == load_spec(SYNTHETIC_EXAMPLE)
    assert client.status(study.id).name == "synthetic-minilm-autopeft"

    updates: list[StudyOut] = []
    with Workers(server.base_url):
        final = client.watch(study.id, updates.append, interval=0.1)
    assert final.state == "completed" and final.counts["completed"] == 10
    assert updates[-1] == final
    done = [u.counts["completed"] for u in updates]
    assert done == sorted(done)

    trials = client.trials(study.id)  # page_size 4: three pages
    assert len(trials) == 10 and {t.number for t in trials} == set(range(10))
    completed = client.trials(study.id, state="completed")
    assert sorted(t.id for t in completed) == sorted(t.id for t in trials)
    assert client.trials(study.id, state="failed") == []

    pareto = client.pareto(study.id)
    with httpx.Client(base_url=server.base_url) as http:
        raw = http.get(f"/v1/studies/{study.id}/pareto",
                       headers={"Authorization": f"Bearer {CLIENT_TOKEN}"}).json()
    assert pareto == ParetoOut.model_validate(raw)
    assert isinstance(pareto, ParetoOut) and all(isinstance(t, TrialSummary) for t in trials)
    assert {t.id for t in pareto.trials} <= {t.id for t in completed}
    assert len(pareto.trials) == final.pareto_size >= 1
    assert final.best is not None and final.best.objective == max(t.objective for t in completed)


def test_submit_spec_object_and_json_file_then_cancel(client: AutopeftClient,
                                                      tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(small_spec(name="from json")))
    from_file = client.submit(spec_file)
    from_object = client.submit(StudySpec.model_validate(small_spec(name="from object")))
    from_dict = client.submit(small_spec(name="from dict"))
    assert [s.name for s in (from_file, from_object, from_dict)] == [
        "from json", "from object", "from dict"]

    study_id = from_dict.id
    wait_for(lambda: client.status(study_id).counts.get("ready", 0) >= 1, what="ready trials")
    cancelled = client.cancel(study_id)
    assert cancelled.state == "cancelled" and cancelled.counts["cancelled"] >= 1
    assert len(client.trials(study_id, state="cancelled")) == cancelled.counts["cancelled"]
    seen: list[StudyOut] = []
    start = time.monotonic()
    assert client.watch(study_id, seen.append, interval=5).state == "cancelled"
    assert len(seen) == 1 and time.monotonic() - start < 2  # returned at once
    for other in (from_file, from_object):
        client.cancel(other.id)


def test_list_studies_follows_pages(server: ServerThread, client: AutopeftClient) -> None:
    for i in range(5):
        client.submit(small_spec(name=f"listed {i}"))
    listed = client.list_studies()  # page_size 4: at least two pages
    with httpx.Client(base_url=server.base_url) as http:
        raw = http.get("/v1/studies", params={"limit": 100},
                       headers={"Authorization": f"Bearer {CLIENT_TOKEN}"}).json()
    assert raw["total"] > 4
    assert [s.id for s in listed] == [s["id"] for s in raw["items"]]
    for study in listed:
        if study.state == "running":
            client.cancel(study.id)


# --------------------------------------------------------------------------- errors


def test_unknown_study_is_404(client: AutopeftClient) -> None:
    for call in (client.status, client.pareto, client.cancel, client.trials):
        with pytest.raises(ClientError) as caught:
            call(999_999)
        assert caught.value.status_code == 404
        assert str(caught.value) == "HTTP 404 Not Found: study 999999 does not exist"


def test_wrong_or_worker_token(server: ServerThread) -> None:
    with AutopeftClient(server.base_url, "wrong-token") as wrong, pytest.raises(ClientError) as e:
        wrong.list_studies()
    assert e.value.status_code == 401 and "HTTP 401" in str(e.value)
    assert "unknown bearer token" in str(e.value)
    with AutopeftClient(server.base_url, WORKER_TOKEN) as worker, pytest.raises(ClientError) as e:
        worker.status(1)
    assert e.value.status_code == 403 and "needs the reader role" in str(e.value)


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with AutopeftClient(url, CLIENT_TOKEN, timeout=5) as nowhere, \
            pytest.raises(ClientError) as caught:
        nowhere.status(1)
    message = str(caught.value)
    assert message.startswith(f"cannot reach the server at {url}: ")
    assert "\n" not in message and caught.value.status_code is None and caught.value.transient


def test_invalid_spec_is_refused_before_sending(client: AutopeftClient) -> None:
    before = len(client.list_studies())
    bad = small_spec(budget={"total_trials": 0})
    with pytest.raises(ConfigError, match=r"^budget\.total_trials: "):
        client.submit(bad)
    with pytest.raises(ConfigError, match=r"^budget\.initial_trials: 8 exceeds"):
        client.submit(small_spec(budget={"total_trials": 5}))
    assert len(client.list_studies()) == before


def test_server_side_422_is_one_line_naming_the_field(client: AutopeftClient) -> None:
    with pytest.raises(ClientError) as caught:  # the optimiser is checked by the server
        client.submit(small_spec(optimizer={"name": "no-such-optimizer"}))
    assert caught.value.status_code == 422
    assert "HTTP 422" in str(caught.value) and "optimizer.name: unknown optimiser" in str(
        caught.value)
    with pytest.raises(ClientError) as caught:  # FastAPI's list of errors
        client.trials(1, state="bogus")
    assert caught.value.status_code == 422 and "query.state: Input should be" in str(
        caught.value)
    assert "\n" not in str(caught.value)


def test_format_detail() -> None:
    detail = [{"loc": ["body", "budget", "total_trials"], "msg": "too small", "type": "x"},
              {"loc": ["body", "name"], "msg": "Value error, empty", "type": "y"}]
    assert format_detail({"detail": detail}) == (
        "body.budget.total_trials: too small; body.name: empty")
    assert format_detail({"detail": "study 3\ndoes not exist"}) == "study 3 does not exist"


def test_watch_rides_out_transient_trouble(client: AutopeftClient,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    readings: list[Any] = [
        _study("running"),
        ClientError("cannot reach the server at x: refused", transient=True),
        _study("completed"),
    ]

    def status(_study_id: int) -> StudyOut:
        reading = readings.pop(0)
        if isinstance(reading, Exception):
            raise reading
        return reading

    monkeypatch.setattr(client, "status", status)
    seen: list[StudyOut] = []
    assert client.watch(1, seen.append, interval=0.01).state == "completed"
    assert [s.state for s in seen] == ["running", "completed"]

    readings[:] = [_study("running"), ClientError("HTTP 404 Not Found: gone", 404)]
    with pytest.raises(ClientError, match="404"):
        client.watch(1, interval=0.01)
    readings[:] = [_study("running")]
    assert client.watch(1, interval=0.01, stop_when_done=False, timeout=0).state == "running"


def test_an_answer_that_is_not_the_model_is_one_client_error(
        client: AutopeftClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server of another version: the client says so in one line, not a traceback."""
    monkeypatch.setattr(client, "_request", lambda *_args, **_kwargs: {"id": "seven"})
    for call in (client.status, client.pareto, client.cancel, client.trials):
        with pytest.raises(ClientError, match=r"not a (StudyOut|ParetoOut|TrialPage)") as caught:
            call(1)
        assert "\n" not in str(caught.value)


def test_ended_trials_counts_completed_failed_and_pruned() -> None:
    study = _study("running").model_copy(update={"counts": {
        "completed": 2, "failed": 1, "pruned": 3, "leased": 4, "ready": 5, "cancelled": 6}})
    assert ended_trials(study) == 6


# --------------------------------------------------------------------------- load_spec


def test_load_spec_errors_name_the_file_and_field(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="missing.yaml: file not found"):
        load_spec(missing)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\nbackbone: x\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line \d+"):
        load_spec(bad_yaml)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: must hold a mapping"):
        load_spec(not_mapping)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{nope")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_spec(bad_json)
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(SYNTHETIC_EXAMPLE.read_text().replace("total_trials: 10",
                                                            "total_trials: many"))
    with pytest.raises(ConfigError) as caught:
        load_spec(invalid)
    assert str(caught.value).startswith(f"{invalid}: budget.total_trials: ")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(SYNTHETIC_EXAMPLE.read_text() + "\nbogus_field: 1\n")
    with pytest.raises(ConfigError, match="bogus_field: Extra inputs are not permitted"):
        load_spec(unknown)


def test_client_imports_no_server_or_training_libraries() -> None:
    code = ("import sys, autopeft_service.client\n"
            "heavy = {'sqlalchemy', 'transformers', 'torch', 'fastapi', 'uvicorn', 'alembic'}\n"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_watch_stops_between_requests_when_its_stop_event_is_set(
        client: AutopeftClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's Ctrl-C handler sets the event; the interrupt surfaces after a complete
    reading, never inside a request, and without waiting out the interval."""
    import threading

    stop = threading.Event()
    calls: list[int] = []

    def status(study_id: int) -> StudyOut:
        calls.append(study_id)
        stop.set()  # "Ctrl-C" arrives while this request is in flight
        return _study("running")

    monkeypatch.setattr(client, "status", status)
    seen: list[StudyOut] = []
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.watch(1, seen.append, interval=30, stop=stop)
    assert time.monotonic() - started < 5
    assert calls == [1] and len(seen) == 1  # the reading completed and was shown
