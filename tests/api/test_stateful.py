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

Two tenants (issue 31): people's calls go with tenant a's member token, admin calls with
an admin's, the worker's with the shared pool's. Every people's call but a creation is
replayed with tenant b's member token (b owns a cancelled study of its own): where a's
call named a's study or trial and succeeded, b's gets 404, whatever the call (cancel
included); b's lists, its view of the workers and its usage hold nothing of a's. b's
answers are checked against the document too.
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
from tests.api import test_openapi_conformance  # noqa: F401  (its upload body media types)
from tests.api.conftest import lease_result, study_spec
from tests.api.two_tenants import TwoTenants

#: Sequences (of up to STEPS calls) per test, over at most RUNS runs of the machine.
SEQUENCES = 25
#: Steps per sequence: the admin operations (seven, fuzzed alone in
#: test_openapi_conformance.py) take some, and the study -> lease -> report chains this test
#: exists for need enough left.
STEPS = 12
RUNS = 3
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance]


def _is(case: Any, method: str, path: str) -> bool:
    return case.operation.method.upper() == method and case.operation.path == path


def _wait_for_the_proposer(base_url: str, a: dict[str, str], timeout: float = 2.0) -> None:
    """Until every running study of this test's own specs holds as many ready or leased trials as its budget and
    parallelism allow (Sobol fills them within milliseconds of a change)."""
    end = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=30) as http:
        while time.monotonic() < end:
            if all(_settled(study) for study in _running(http, a)
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


def _ensure_a_study(base_url: str, a: dict[str, str]) -> None:
    """Make a valid study of tenant a's when none runs (test data for the lease -> report
    chain)."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        if not _running(http, a):
            made = http.post("/v1/studies", headers=a, json=study_spec(
                name="stateful lease source", budget=_SMALL_BUDGET))
            assert made.status_code == 201, made.text


_SMALL_BUDGET = {"total_trials": 4, "initial_trials": 4, "max_parallel": 2, "max_attempts": 2}


def _running(http: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every running study the caller sees (all pages)."""
    studies: list[dict[str, Any]] = []
    while True:
        page = http.get("/v1/studies", params={"offset": len(studies), "limit": 100},
                        headers=headers).json()
        studies.extend(page["items"])
        if not page["items"] or len(studies) >= page["total"]:
            return [study for study in studies if study["state"] == "running"]


def _settled(study: dict[str, Any]) -> bool:
    counts, budget = study["counts"], study["spec"]["budget"]
    ended = sum(counts.get(state, 0) for state in ("completed", "failed", "pruned"))
    want = min(budget["max_parallel"], budget["total_trials"] - ended)
    return counts.get("ready", 0) + counts.get("leased", 0) >= want


def _machine(base_url: str, tenants: TwoTenants) -> tuple[type, Counter[str], list[str]]:
    """The state machine over the live server's document, the counter of what its calls
    reached (``"<METHOD> <path> <status>"``, ``b <METHOD> <path> <status>`` for tenant b's
    replays, and ``sequences``) and the failed checks (tenant b's leaks among them)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    a = tenants.headers["a"]
    reached: Counter[str] = Counter()
    failures: list[str] = []

    class Machine(schema.as_state_machine()):  # type: ignore[misc]  # a class built at run time
        leases: ClassVar[dict[int, dict[str, Any]]] = {}
        studies_posted: ClassVar[int] = 0

        def setup(self) -> None:
            """Each sequence starts from the same state (hypothesis requires that the same
            choices lead to the same responses): no study of an earlier one runs on."""
            with httpx.Client(base_url=base_url, timeout=30) as http:
                for study in _running(http, a):
                    http.post(f"/v1/studies/{study['id']}/cancel", headers=a)
            Machine.leases.clear()
            reached["sequences"] += 1

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": tenants.headers[tenants.role_of(case.operation)]}

        def before_call(self, case: Any) -> None:
            # The role's own token (a generated Authorization header would end most
            # sequences at 401; tests/api/test_openapi_conformance.py covers bad tokens).
            case.headers = {**(case.headers or {}), **self.get_call_kwargs(case)["headers"]}
            tenants.guard(case)  # generated admin calls leave the tenants' tokens alone
            if _is(case, "POST", "/v1/studies"):
                Machine.studies_posted += 1
                if Machine.studies_posted % 2 == 0:
                    case.body = study_spec(name=f"stateful {Machine.studies_posted}",
                                           budget=_SMALL_BUDGET)
            elif _is(case, "POST", "/v1/leases"):
                _ensure_a_study(base_url, a)  # so that a lease can lead somewhere
                _wait_for_the_proposer(base_url, a)  # a lease's answer must not race it
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
                tenants.a_studies.add(lease["study_id"])  # b's own study ended at once:
                tenants.a_trials.add(lease["trial_id"])  # every lease is of a's
            if tenants.role_of(case.operation) != "a" or _is(case, "POST", "/v1/studies"):
                # (b's replay of a creation would make b's study, not reach a's)
                return
            tenants.note(case, response)
            # Tenant b replays a's call: a refusal (no state changes), or b's own lists.
            b = tenants.headers["b"]
            replay = case.call(headers=b)
            reached[f"b {case.operation.method.upper()} {case.operation.path} "
                    f"{replay.status_code}"] += 1
            self.validate_response(replay, case, headers=b)
            leak = tenants.leak(case, response.status_code, replay)
            if leak:
                failures.append(f"tenant b reached tenant a's: {leak}")

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
    tenants = TwoTenants.make(server.settings.database_url)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        b = tenants.headers["b"]  # b's own study, ended at once: b's lists are not empty
        own = http.post("/v1/studies", headers=b, json=study_spec(name="tenant b's"))
        assert own.status_code == 201, own.text
        assert http.post(f"/v1/studies/{own.json()['id']}/cancel",
                         headers=b).status_code == 200
    machine, reached, failures = _machine(server.base_url, tenants)
    for _ in range(RUNS):
        try:
            machine.run(settings=settings(
                max_examples=SEQUENCES, stateful_step_count=STEPS, deadline=None, database=None,
                derandomize=True,  # the same sequences on every run of the suite
                suppress_health_check=list(HealthCheck)))
        except Flaky:
            # A live server is state: the same choices may meet other responses later on
            # (a proposer's timing), which hypothesis calls flaky. schemathesis's own engine
            # ends such a run without failing it; so does this test, and runs again.
            pass
        if reached["sequences"] >= SEQUENCES:
            break
    tenants.close()
    assert not failures, failures
    assert reached["sequences"] >= SEQUENCES // 2, reached
    # The sequences got past the refusals: studies made and read by their id, trials leased
    # and reported with their lease.
    assert reached["POST /v1/studies 201"] > 0, reached
    assert reached["GET /v1/studies/{study_id} 200"] > 0, reached
    assert reached["POST /v1/leases 200"] > 0, reached
    assert sum(reached[f"POST /v1/trials/{{trial_id}}/{action} 200"]
               for action in ("heartbeat", "result", "failure")) > 0, reached
    # Tenant b met a's study by its id (404) and listed studies without a's.
    assert reached["b GET /v1/studies/{study_id} 404"] > 0, reached
    assert reached["b GET /v1/studies 200"] > 0, reached
    assert tenants.a_studies, reached
