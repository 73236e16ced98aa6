"""Sobol optimiser: valid, new, deterministic, and its position follows the history."""

import pytest

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.spaces import AutoPeftSpace
from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import History, Observation, OptimizerError, point_key
from autopeft_service.optimizers.factory import make_optimizer
from autopeft_service.optimizers.sobol import SobolOptimizer

DIMS = BackboneDims(num_layers=6, hidden_size=384, num_heads=12, ffn_size=1536,
                    total_parameters=22_713_216)
SPACE = AutoPeftSpace.for_backbone(DIMS)


def test_points_are_valid_distinct_and_deterministic() -> None:
    first = SobolOptimizer(SPACE, seed=3).suggest(50, History())
    again = SobolOptimizer(SPACE, seed=3).suggest(50, History())
    other = SobolOptimizer(SPACE, seed=4).suggest(50, History())
    assert [s.params for s in first] == [s.params for s in again]
    assert [s.params for s in first] != [s.params for s in other]
    assert len({point_key(s.params) for s in first}) == 50
    assert all(SPACE.is_valid(s.params) and s.generator == "sobol" for s in first)


def test_history_sets_the_position_so_a_restart_continues_the_sequence() -> None:
    optimizer = SobolOptimizer(SPACE, seed=0)
    whole = [s.params for s in optimizer.suggest(12, History())]
    done = [Observation(params=p, score=0.5, param_share=1.0) for p in whole[:5]]
    rest = SobolOptimizer(SPACE, seed=0).suggest(
        7, History(completed=done, pending=whole[5:8], failed=[]))
    assert [s.params for s in rest[:4]] == whole[8:12]


def test_covers_every_value_of_every_parameter() -> None:
    points = [s.params for s in SobolOptimizer(SPACE, seed=1).suggest(128, History())]
    for parameter in SPACE.parameters():
        assert {p[parameter.name] for p in points} == set(parameter.values), parameter.name


def test_exhausted_space_raises() -> None:
    tiny = AutoPeftSpace(num_layers=1, serial_adapter_sizes=(0, 1), parallel_adapter_sizes=(0,),
                         prefix_lengths=(0,))
    optimizer = SobolOptimizer(tiny, seed=0, max_draws=256)
    (only,) = optimizer.suggest(1, History())
    with pytest.raises(OptimizerError, match="only 0 new points"):
        optimizer.suggest(1, History(pending=[only.params]))


def test_factory_rejects_unknown_names_and_settings() -> None:
    base = {"name": "s", "backbone": "b", "task": "synthetic",
            "search_space": {"num_layers": 6, "hidden_size": 384}}
    assert make_optimizer(StudySpec.model_validate({**base, "optimizer": {"name": "sobol"}})
                          ).name == "sobol"
    assert make_optimizer(StudySpec.model_validate(base)).name == "saasbo"  # the default
    with pytest.raises(ConfigError, match="optimizer.name: unknown optimiser 'bo'"):
        make_optimizer(StudySpec.model_validate({**base, "optimizer": {"name": "bo"}}))
    with pytest.raises(ConfigError, match="optimizer.settings"):
        make_optimizer(StudySpec.model_validate({**base, "optimizer": {"name": "sobol", "settings": {"a": 1}}}))
