"""Comparison plans: validation names the field, bare names are catalogue baselines."""

from __future__ import annotations

import pytest

from autopeft_service.domain.baselines import BASELINES
from autopeft_service.domain.comparison_plan import ComparisonPlan, seed_settings
from autopeft_service.domain.errors import ConfigError

CONFIG = {"num_layers": 2, "lora": {"ranks": [4, 4]}}


def _plan(**changes: object) -> dict:
    return {"model": "tiny", "task": "synthetic", "seeds": 3,
            "candidates": [{"name": "lora-4", "config": CONFIG}],
            "baselines": ["lora-r8-qv", "full-ft"], **changes}


def test_bare_names_are_catalogue_baselines_with_their_overrides() -> None:
    plan = ComparisonPlan.from_dict(_plan(training={"learning_rate": 0.003}))
    assert [a.label for a in plan.baselines] == ["lora-r8-qv", "full-ft"]
    shared = plan.shared_settings()
    assert plan.baselines[0].settings(shared).learning_rate == 0.003
    assert plan.baselines[1].settings(shared).learning_rate == 1e-4  # full-ft's own rate
    assert plan.baselines[1].build(6) == BASELINES["full-ft"].config(6)
    assert plan.seed_list() == [0, 1, 2]


def test_each_seed_draws_its_own_subset() -> None:
    shared = ComparisonPlan.from_dict(_plan()).shared_settings()
    assert [seed_settings(shared, k).data_seed for k in (0, 1, 4)] == [0, 1, 4]


@pytest.mark.parametrize(("changes", "field"), [
    ({"baselines": ["no-such"]}, "baselines.0"),
    ({"candidates": [{"config": CONFIG}]}, "candidates.0"),
    ({"candidates": [{"name": "x", "config": {"num_layers": 2, "lora": {"ranks": [4]}}}]},
     "candidates.0"),
    ({"candidates": [{"name": "x", "baseline": "mam", "config": CONFIG}]}, "candidates.0"),
    ({"training": {"data_seed": 3}}, "training.data_seed"),
    ({"training": {"epochs": -1}}, "epochs"),
    ({"seeds": 0}, "seeds"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"baselines": ["lora-r8-qv", "lora-r8-qv"]}, "unique"),
    ({"alpha": 2.0}, "alpha"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_plans_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ComparisonPlan.from_dict(_plan(**changes))


def test_an_inline_config_for_another_depth_is_refused_when_built() -> None:
    plan = ComparisonPlan.from_dict(_plan())
    with pytest.raises(ConfigError, match="num_layers 2 but the backbone has 6"):
        plan.candidates[0].build(6)
