"""schemathesis's stateful phase: sequences of calls linked through the OpenAPI document
(a study made by POST /v1/studies is read, listed and cancelled by its id; a lease from
POST /v1/leases is heart-beaten, reported and failed by its trial id), on SQLite and
PostgreSQL. Every response is checked against the document: no 5xx, no undocumented
status code, the documented schema.

Generated study specs rarely satisfy the checks no schema can state (budget against the
space's size, the space's depth against the backbone's), so every other POST /v1/studies
sends a valid spec instead, and a report for a trial this run leased carries that lease's
token and exact counts: the machine then reaches the report and cancel paths as well as
the refusals. A lease is preceded by a valid study when none runs, and followed, through
the document's links, by the worker's calls on that trial.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import Flaky
from schemathesis import checks

from autopeft_service.testing.server import ServerThread
from tests.api.conftest import CLIENT, WORKER, lease_result, study_spec

#: Sequences (of up to 8 calls) per test, over at most RUNS runs of the machine.
SEQUENCES = 25
RUNS = 3
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance]


def _is(case: Any, method: str, path: str) -> bool:
    return case.operation.method.upper() == method and case.operation.path == path


def _wait_for_the_proposer(base_url: str, timeout: float = 2.0) -> None:
    """Until every running study of this test's own specs holds as many ready or leased trials as its budget and
    parallelism allow (Sobol fills them within milliseconds of a change)."""
    end = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=30) as http:
        while time.monotonic() < end:
            if all(_settled(study) for study in _running(http)
                   if study["name"].startswith("stateful")):  # generated budgets may not fill
                return
            time.sleep(0.02)


def _report_body(action: str, lease: dict[str, Any]) -> dict[str, Any]:
    """A body the server accepts for a heartbeat, result or failure of ``lease``."""
    if action == "result":
        return {"token": lease["token"], "result": lease_result(lease)}
    if action == "failure":
        return {"token": lease["token"], "reason": "stateful test", "retry": True}
    return {"token": lease["token"], "progress": {"step": 1}}


def _ensure_a_study(base_url: str) -> None:
    """Make a valid study when none runs (test data for the lease -> report chain)."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        if not _running(http):
            made = http.post("/v1/studies", headers=CLIENT, json=study_spec(
                name="stateful lease source", budget=_SMALL_BUDGET))
            assert made.status_code == 201, made.text


_SMALL_BUDGET = {"total_trials": 4, "initial_trials": 4, "max_parallel": 2, "max_attempts": 2}


def _running(http: httpx.Client) -> list[dict[str, Any]]:
    """Every running study (all pages)."""
    studies: list[dict[str, Any]] = []
    while True:
        page = http.get("/v1/studies", params={"offset": len(studies), "limit": 100},
                        headers=CLIENT).json()
        studies.extend(page["items"])
        if not page["items"] or len(studies) >= page["total"]:
            return [study for study in studies if study["state"] == "running"]


def _settled(study: dict[str, Any]) -> bool:
    counts, budget = study["counts"], study["spec"]["budget"]
    ended = sum(counts.get(state, 0) for state in ("completed", "failed", "pruned"))
    want = min(budget["max_parallel"], budget["total_trials"] - ended)
    return counts.get("ready", 0) + counts.get("leased", 0) >= want


def _machine(base_url: str) -> tuple[type, Counter[str], list[str]]:
    """The state machine over the live server's document, the counter of what its calls
    reached (``"<METHOD> <path> <status>"``, and ``sequences``) and the failed checks."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    reached: Counter[str] = Counter()
    failures: list[str] = []

    class Machine(schema.as_state_machine()):  # type: ignore[misc]  # a class built at run time
        leases: ClassVar[dict[int, dict[str, Any]]] = {}
        studies_posted: ClassVar[int] = 0

        def setup(self) -> None:
            """Each sequence starts from the same state (hypothesis requires that the same
            choices lead to the same responses): no study of an earlier one runs on."""
            with httpx.Client(base_url=base_url, timeout=30) as http:
                for study in _running(http):
                    http.post(f"/v1/studies/{study['id']}/cancel", headers=CLIENT)
            Machine.leases.clear()
            reached["sequences"] += 1

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            tags = case.operation.definition.raw.get("tags", [])
            return {"headers": WORKER if "workers" in tags else CLIENT}

        def before_call(self, case: Any) -> None:
            # The role's own token (a generated Authorization header would end most
            # sequences at 401; tests/api/test_openapi_conformance.py covers bad tokens).
            case.headers = {**(case.headers or {}), **self.get_call_kwargs(case)["headers"]}
            if _is(case, "POST", "/v1/studies"):
                Machine.studies_posted += 1
                if Machine.studies_posted % 2 == 0:
                    case.body = study_spec(name=f"stateful {Machine.studies_posted}",
                                           budget=_SMALL_BUDGET)
            elif _is(case, "POST", "/v1/leases"):
                _ensure_a_study(base_url)  # so that a lease can lead somewhere
                _wait_for_the_proposer(base_url)  # a lease's answer must not race it
                if isinstance(case.body, dict):
                    case.body = {**case.body, "wait_seconds": 0}
            elif case.operation.path.startswith("/v1/trials/{trial_id}/") and \
                    case.operation.method.upper() == "POST":
                lease = Machine.leases.get(case.path_parameters.get("trial_id"))
                if lease is not None:  # the lease's own token: the report can be accepted
                    case.body = _report_body(case.operation.path.rsplit("/", 1)[-1], lease)

        def after_call(self, response: Any, case: Any) -> None:
            reached[f"{case.operation.method.upper()} {case.operation.path} "
                    f"{response.status_code}"] += 1
            if _is(case, "POST", "/v1/leases") and response.status_code == 200:
                lease = response.json()
                Machine.leases[lease["trial_id"]] = lease

        def validate_response(self, response: Any, case: Any,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            try:
                case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"))
            except Exception as error:  # noqa: BLE001 - recorded, asserted at the end
                failures.append(f"{case.operation.method.upper()} {case.operation.path} "
                                f"{response.status_code}: {str(error)[:500]}")

    return Machine, reached, failures


def test_linked_call_sequences_conform_to_the_document(
        make_server: Callable[..., ServerThread]) -> None:
    server = make_server(long_poll_seconds=0.2)
    machine, reached, failures = _machine(server.base_url)
    for _ in range(RUNS):
        try:
            machine.run(settings=settings(
                max_examples=SEQUENCES, stateful_step_count=8, deadline=None, database=None,
                derandomize=True,  # the same sequences on every run of the suite
                suppress_health_check=list(HealthCheck)))
        except Flaky:
            # A live server is state: the same choices may meet other responses later on
            # (a proposer's timing), which hypothesis calls flaky. schemathesis's own engine
            # ends such a run without failing it; so does this test, and runs again.
            pass
        if reached["sequences"] >= SEQUENCES:
            break
    assert not failures, failures
    assert reached["sequences"] >= SEQUENCES // 2, reached
    # The sequences got past the refusals: studies made and read by their id, trials leased
    # and reported with their lease.
    assert reached["POST /v1/studies 201"] > 0, reached
    assert reached["GET /v1/studies/{study_id} 200"] > 0, reached
    assert reached["POST /v1/leases 200"] > 0, reached
    assert sum(reached[f"POST /v1/trials/{{trial_id}}/{action} 200"]
               for action in ("heartbeat", "result", "failure")) > 0, reached
