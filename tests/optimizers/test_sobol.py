"""Sobol optimiser: valid, new, deterministic, and its position follows the history."""

import time

import pytest

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.spaces import AutoPeftSpace
from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import (
    History,
    Observation,
    OptimizerError,
    SamplerExhausted,
    point_key,
)
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


# -- bounded work (issue 31, item 4): no study may hold the proposer

TINY = AutoPeftSpace(num_layers=1, serial_adapter_sizes=(0, 1), parallel_adapter_sizes=(0,),
                     prefix_lengths=(0,))
WIDE = AutoPeftSpace.for_backbone(DIMS.model_copy(update={"num_layers": 256}))


def test_a_stalled_sequence_is_exhausted_long_before_the_draw_limit() -> None:
    """A space the sampler cannot find more of ends after stall_draws fruitless draws,
    not after max_draws (a million here), and the error carries the points found."""
    optimizer = SobolOptimizer(TINY, seed=0, max_draws=1_000_000, stall_draws=512)
    with pytest.raises(SamplerExhausted, match="only 1 new points of 5") as caught:
        optimizer.suggest(5, History())
    assert [s.params for s in caught.value.found] == [s.params for s in
                                                       SobolOptimizer(TINY).suggest(1, History())]
    assert caught.value.draws <= 1024
    with pytest.raises(SamplerExhausted):  # and stays exhausted, at no cost
        optimizer.suggest(1, History(pending=[caught.value.found[0].params]))


def test_suggest_within_stops_at_its_deadline_and_resumes_the_same_sequence() -> None:
    """A large request on a 256-layer space returns what it found in time; the next call
    continues the scan, and both together are the sequence's first points."""
    optimizer = SobolOptimizer(WIDE, seed=2)
    started = time.monotonic()
    first = optimizer.suggest_within(10_000, History(), seconds=0.2)
    assert time.monotonic() - started < 1.0
    assert 0 < len(first) < 10_000
    second = optimizer.suggest_within(10, History(pending=[s.params for s in first]), 5.0)
    assert len(second) == 10
    whole = SobolOptimizer(WIDE, seed=2).suggest(len(first) + 10, History())
    assert [s.params for s in first + second] == [s.params for s in whole]


def test_a_history_that_is_not_the_continuation_restarts_the_scan() -> None:
    """Points returned but not queued (a budget race) are proposed again: the kept scan is
    dropped when the history lacks them."""
    optimizer = SobolOptimizer(SPACE, seed=5)
    dropped = optimizer.suggest_within(3, History(), seconds=5.0)
    again = optimizer.suggest_within(3, History(), seconds=5.0)
    assert [s.params for s in again] == [s.params for s in dropped]
