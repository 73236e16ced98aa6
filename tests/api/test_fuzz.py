"""The API never answers 500 to a malformed body (random JSON against every POST route)."""

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import CLIENT, WORKER, create_study, study_spec

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)

# Bodies shaped like the real ones with random values in random fields.
spec_like = st.builds(lambda key, value: {**study_spec(), key: value},
                      st.sampled_from(["budget", "search_space", "training", "optimizer",
                                       "reference_point", "seed", "task_options", "name"]),
                      json_values)
report_like = st.fixed_dictionaries({"token": json_values, "result": json_values})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=json_values | spec_like | report_like, route=st.sampled_from(
    ["/v1/studies", "/v1/leases", "/v1/trials/1/heartbeat", "/v1/trials/1/result",
     "/v1/trials/1/failure", "/v1/studies/1/cancel"]))
def test_random_bodies_never_get_a_500(http: httpx.Client, body: object, route: str) -> None:
    headers = CLIENT if route.startswith("/v1/studies") else WORKER
    if route == "/v1/leases" and isinstance(body, dict):
        body = {**body, "wait_seconds": 0}
    response = http.post(route, json=body, headers=headers)
    assert response.status_code < 500, (route, body, response.text)


def test_random_bodies_against_a_live_trial(http: httpx.Client) -> None:
    create_study(http)
    lease = http.post("/v1/leases", json={"worker": "w", "wait_seconds": 2},
                      headers=WORKER).json()
    route = f"/v1/trials/{lease['trial_id']}"
    for body in ({"token": lease["token"], "result": {"objective": "high"}},
                 {"token": lease["token"], "result": {}}, {"token": lease["token"]},
                 {"token": lease["token"], "progress": [1, 2]},
                 {"token": lease["token"], "reason": ""}):
        for action in ("result", "heartbeat", "failure"):
            response = http.post(f"{route}/{action}", json=body, headers=WORKER)
            assert response.status_code < 500, (action, body, response.text)


def test_out_of_range_ids_are_client_errors(http: httpx.Client) -> None:
    for path in ("/v1/studies/99999999999999999999", "/v1/studies/0", "/v1/studies/-1/pareto"):
        assert http.get(path, headers=CLIENT).status_code == 422, path
    response = http.post("/v1/trials/99999999999999/heartbeat", json={"token": "t"},
                         headers=WORKER)
    assert response.status_code == 422
