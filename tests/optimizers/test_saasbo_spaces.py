"""saasbo on every family: valid canonical proposals from the model after the initial
trials, distinct within a batch, never a completed, pending or failed point (or, in the
non-injective design space, configuration) again; the exact share from the space."""

from __future__ import annotations

import pytest

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.share import share_percent
from autopeft_service.domain.spaces import FAMILIES, SearchSpaceBase, space_for_backbone
from autopeft_service.optimizers.base import History, Observation, Point, point_key
from autopeft_service.optimizers.saasbo import Encoding, SaasboOptimizer, SaasboSettings
from autopeft_service.optimizers.sobol import SobolOptimizer

CHEAP = SaasboSettings(warmup_steps=32, num_samples=16, thinning=8, mc_samples=32,
                       candidates=128, restarts=2)
SPACES: dict[str, SearchSpaceBase] = {kind: space_for_backbone(kind, MINILM_DIMS)
                                      for kind in FAMILIES}


def score(space: SearchSpaceBase, point: Point) -> float:
    """A smooth made-up score: more parameters help up to ~1 %, then hurt."""
    share = share_percent(space.decode(point), MINILM_DIMS)
    return 0.6 + 0.3 * min(share, 1.0) - 0.1 * max(0.0, share - 1.0)


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_saasbo_proposes_new_valid_points_from_the_model(kind: str) -> None:
    space = SPACES[kind]

    def share(point: Point) -> float:
        return share_percent(space.decode(point), MINILM_DIMS)

    initial = [s.params for s in SobolOptimizer(space, seed=1).suggest(12, History())]
    completed = [Observation(p, score(space, p), share(p)) for p in initial[:9]]
    history = History(completed=completed, pending=initial[9:11], failed=initial[11:])
    optimizer = SaasboOptimizer(space, seed=1, initial_trials=8, reference_point=(0.5, 10.0),
                                settings=CHEAP, share=share)
    batch = optimizer.suggest(4, history)
    assert [s.generator for s in batch] == ["saasbo"] * 4
    assert optimizer.last_info is not None and optimizer.last_info.exact_share
    keys = [point_key(s.params) for s in batch]
    assert len(set(keys)) == 4
    assert not set(keys) & {point_key(p) for p in history.points()}
    for suggestion in batch:
        assert space.is_valid(suggestion.params), space.validity_error(suggestion.params)
        assert space.canonical(suggestion.params) == suggestion.params
    configs = {space.config_key(p) for p in history.points()}
    assert len({space.config_key(s.params) for s in batch} | configs) == len(configs) + 4


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_the_encoding_round_trips_and_one_hot_encodes_categoricals(kind: str) -> None:
    space = SPACES[kind]
    encoding = Encoding(space)
    points = [s.params for s in SobolOptimizer(space, seed=5).suggest(40, History())]
    index = encoding.to_index(points)
    unit = encoding.to_unit(index)
    assert unit.shape[-1] == encoding.model_dimension
    assert unit.min() >= 0 and unit.max() <= 1
    assert [encoding.to_point(row) for row in encoding.unit_to_index(unit)] == points
    for j in range(len(encoding.parameters)):
        if encoding.categorical[j]:
            block = unit[:, encoding.columns[j]:encoding.columns[j] + encoding.widths[j]]
            assert (block.sum(-1) == 1).all()  # one-hot: one category at a time
    neighbours = encoding.neighbours(index[:3])
    assert all(space.is_valid(encoding.to_point(row)) for row in neighbours)


def test_design_space_proposals_never_repeat_a_configuration() -> None:
    """Two designs can be one configuration: Sobol skips the second one."""
    space = SPACES["design_space"]
    proposals = [s.params for s in SobolOptimizer(space, seed=0).suggest(60, History())]
    configs = [space.config_key(p) for p in proposals]
    assert len(set(configs)) == len(configs)
    again = SobolOptimizer(space, seed=3).suggest(10, History(completed=[
        Observation(p, 0.5, count_parameters(space.decode(p), MINILM_DIMS).deployed_percent)
        for p in proposals]))
    assert not {space.config_key(s.params) for s in again} & set(configs)
