"""Both shares in the API: every trial carries its deployed and its trainable share, the
study and the front say which one is the objective (deployed unless the spec says)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from autopeft_service.api.views import trial_shares, trial_summary
from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.share import planned_counts
from autopeft_service.storage.models import TrialRow
from tests.api.conftest import CLIENT, create_study, lease_result, report_result, take_lease
from tests.domain.test_share import BACKBONE, DEPLOYED, TRAINABLE

BUDGET = {"total_trials": 3, "initial_trials": 3, "max_parallel": 3, "max_attempts": 2}


def expected_shares(lease: dict[str, Any]) -> tuple[float, float]:
    counts = count_parameters(PeftConfig.model_validate(lease["config"]), MINILM_DIMS)
    return counts.deployed_percent, counts.trainable_percent


@pytest.mark.parametrize("count", ["deployed", "trainable"])
def test_a_completed_trial_shows_both_shares_everywhere(http: httpx.Client, count: str) -> None:
    overrides: dict[str, Any] = {} if count == "deployed" else {"param_share": count}
    study = create_study(http, budget=BUDGET, **overrides)
    done, running = take_lease(http), take_lease(http)
    report_result(http, done, 0.9)
    base = f"/v1/studies/{study['id']}"
    trials = {t["number"]: t for t in http.get(f"{base}/trials", headers=CLIENT)
              .json()["items"]}
    pareto = http.get(f"{base}/pareto", headers=CLIENT).json()
    got = http.get(base, headers=CLIENT).json()
    assert got["param_share_count"] == pareto["param_share_count"] == count

    deployed, trainable = expected_shares(done)
    completed = trials[done["number"]]
    assert completed["state"] == "completed"
    assert completed["deployed_share"] == pytest.approx(deployed)
    assert completed["trainable_share"] == pytest.approx(trainable)
    assert completed["trainable_share"] == pytest.approx(completed["result"]["trainable_percent"])
    assert completed["deployed_share"] <= completed["trainable_share"]
    # the objective is one of the two, as the spec picked it
    assert completed["param_share"] == completed[f"{count}_share"]
    [front] = pareto["trials"]
    assert front["number"] == done["number"]
    assert (front["deployed_share"], front["trainable_share"]) \
        == (completed["deployed_share"], completed["trainable_share"])
    assert got["best"]["deployed_share"] == completed["deployed_share"]
    assert got["best"]["trainable_share"] == completed["trainable_share"]
    # a running trial's shares are known from its proposal, before any result
    leased = trials[running["number"]]
    assert leased["state"] == "leased" and leased["result"] is None
    assert (leased["deployed_share"], leased["trainable_share"]) \
        == pytest.approx(expected_shares(running))


def test_a_results_shares_without_the_servers_counts() -> None:
    """A study stored before backbone_dims: the worker's report, its deployed share derived
    from its counts when an older worker sent no deployed_percent."""
    config = PeftConfig(num_layers=6, prefix={"lengths": [10] * 6})
    counts = count_parameters(config, MINILM_DIMS)
    lease = {"config": config.model_dump(mode="json"),
             "backbone_dims": MINILM_DIMS.model_dump()}
    row = TrialRow(id=1, study_id=1, number=0, state="completed", params={},
                   config=config.model_dump(mode="json"), generator="sobol", attempt=1,
                   result=lease_result(lease), created_at=0.0)
    assert "deployed_percent" not in row.result  # as an older worker reports
    deployed, trainable = trial_shares(row, None)
    assert trainable == counts.trainable_percent
    assert deployed == pytest.approx(counts.deployed_percent)
    row.result = {**row.result, "deployed_percent": 0.25}
    assert trial_shares(row, None) == (0.25, trainable)
    row.result = None
    assert trial_shares(row, None) == (None, None)


def test_a_prefix_trials_trainable_share_includes_its_mlp() -> None:
    config = PeftConfig(num_layers=6, prefix={"lengths": [10] * 6, "mlp_width": 800})
    planned = planned_counts(config, MINILM_DIMS)
    row = TrialRow(id=1, study_id=1, number=0, state="ready", params={},
                   config=config.model_dump(mode="json"), generator="sobol", attempt=0,
                   param_share=planned.share, expected_trainable=planned.trainable,
                   expected_deployed=planned.deployed, created_at=0.0)
    summary = trial_summary(row, (), MINILM_DIMS.total_parameters)
    assert summary.trainable_share == pytest.approx(100 * TRAINABLE / BACKBONE)
    assert summary.deployed_share == pytest.approx(100 * DEPLOYED / BACKBONE)
    assert summary.trainable_share is not None and summary.deployed_share is not None
    assert summary.trainable_share > summary.deployed_share
    assert summary.param_share == summary.deployed_share  # the default objective
