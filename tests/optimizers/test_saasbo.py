"""SAAS-BO optimiser: Sobol prefix, model proposals, pending points, exactness, quality.

NUTS runs with cheap settings here (warmup 32, 16 samples, thinning 8: two GP samples); the
compiled NUTS program is shared by every test of the module (same settings, same padded
sizes), so the first model test pays the compilation (a few seconds).
"""

from __future__ import annotations

import statistics

import pytest
import torch

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.pareto import ObjectivePoint, hypervolume
from autopeft_service.domain.spaces import AutoPeftSpace
from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import History, Observation, Point, point_key
from autopeft_service.optimizers.factory import make_optimizer
from autopeft_service.optimizers.saasbo import (
    Encoding,
    SaasboOptimizer,
    SaasboSettings,
    SingleCandidateNehvi,
)
from autopeft_service.optimizers.sobol import SobolOptimizer
from workers.fake_worker import synthetic_score

#: MiniLM's widths with 12 layers (all-MiniLM-L12): a 15-dimension AutoPEFT space.
DIMS = BackboneDims.from_hf_config({
    "model_type": "bert", "hidden_size": 384, "intermediate_size": 1536,
    "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 30522,
    "max_position_embeddings": 512})
SPACE = AutoPeftSpace.for_backbone(DIMS)
REFERENCE = (0.5, 10.0)
CHEAP = SaasboSettings(warmup_steps=32, num_samples=16, thinning=8, mc_samples=32,
                       candidates=256, restarts=4)


def observe(point: Point) -> Observation:
    """The fake worker's result: synthetic score, exact analytic share."""
    config = SPACE.decode(point)
    return Observation(params=point, score=synthetic_score(config),
                       param_share=count_parameters(config, DIMS).trainable_percent)


def exact_share(point: Point) -> float:
    """The server's share of a point (as the factory builds it from backbone_dims)."""
    return count_parameters(SPACE.decode(point), DIMS).trainable_percent


def optimizer(seed: int = 0, initial_trials: int = 12, settings: SaasboSettings = CHEAP,
              exact: bool = True) -> SaasboOptimizer:
    return SaasboOptimizer(SPACE, seed=seed, initial_trials=initial_trials,
                           reference_point=REFERENCE, settings=settings,
                           share=exact_share if exact else None)


def sobol_history(count: int, seed: int = 0) -> History:
    points = [s.params for s in SobolOptimizer(SPACE, seed=seed).suggest(count, History())]
    return History(completed=[observe(p) for p in points])


def keys(suggestions) -> list:  # type: ignore[no-untyped-def]
    return [point_key(s.params) for s in suggestions]


def closed_loop(opt, total: int, batch: int) -> list[Observation]:  # type: ignore[no-untyped-def]
    done: list[Observation] = []
    while len(done) < total:
        proposals = opt.suggest(min(batch, total - len(done)), History(completed=done))
        done += [observe(s.params) for s in proposals]
    return done


def area(observations: list[Observation]) -> float:
    return hypervolume([ObjectivePoint(o.score, o.param_share) for o in observations],
                       ObjectivePoint(*REFERENCE))


# ------------------------------------------------------------------ Sobol prefix and model


def test_sobol_before_the_initial_trials_then_the_model() -> None:
    whole = [s.params for s in SobolOptimizer(SPACE, seed=3).suggest(12, History())]
    opt = optimizer(seed=3, initial_trials=12)
    first = opt.suggest(4, History())
    assert [s.params for s in first] == whole[:4]
    assert {s.generator for s in first} == {"sobol"}
    # 8 completed + 2 pending: two Sobol points remain, the other two come from the model.
    history = History(completed=[observe(p) for p in whole[:8]], pending=whole[8:10])
    mixed = opt.suggest(4, history)
    assert [s.generator for s in mixed] == ["sobol", "sobol", "saasbo", "saasbo"]
    assert [s.params for s in mixed[:2]] == whole[10:12]
    after = opt.suggest(3, sobol_history(12, seed=3))
    assert [s.generator for s in after] == ["saasbo"] * 3
    assert opt.last_info is not None and opt.last_info.exact_share
    assert all(SPACE.is_valid(s.params) for s in mixed + after)


def test_a_restarted_optimizer_continues_the_sobol_prefix_and_repeats_the_model() -> None:
    whole = [s.params for s in SobolOptimizer(SPACE, seed=0).suggest(12, History())]
    done = [observe(p) for p in whole[:5]]
    history = History(completed=done, pending=whole[5:8], failed=[])
    rest = optimizer(initial_trials=12).suggest(4, history)
    assert [s.params for s in rest] == whole[8:12]
    model_history = sobol_history(12)
    first = optimizer().suggest(2, model_history)
    again = optimizer().suggest(2, model_history)
    assert [s.params for s in first] == [s.params for s in again]


# ------------------------------------------------------------------ pending and seen points


def test_batch_points_differ_and_no_seen_point_is_proposed_again() -> None:
    history = sobol_history(12)
    batch = optimizer().suggest(4, history)
    assert len(set(keys(batch))) == 4
    # The batch's points as pending: proposed again, they must not come back.
    with_pending = History(completed=history.completed, pending=[s.params for s in batch])
    next_batch = optimizer().suggest(4, with_pending)
    assert not set(keys(next_batch)) & set(keys(batch))
    # The best proposal completed (with its true, good result) and the rest failed: the
    # model wants more of the same, but none of them is proposed again.
    best = observe(batch[0].params)
    after = History(completed=[*history.completed, best],
                    failed=[s.params for s in batch[1:]])
    again = optimizer().suggest(4, after)
    seen = {point_key(o.params) for o in after.completed} | set(keys(batch))
    assert not set(keys(again)) & seen
    assert all(s.generator == "saasbo" for s in again)


def test_a_pending_point_changes_what_is_proposed() -> None:
    history = sobol_history(12)
    (alone,) = optimizer().suggest(1, history)
    (with_pending,) = optimizer().suggest(1, History(completed=history.completed,
                                                     pending=[alone.params]))
    assert with_pending.params != alone.params
    # Sequential greedy: the second point of a batch is the best point given the first as
    # pending (same model, same seed), so it differs from the unconditioned best.
    pair = optimizer().suggest(2, history)
    assert pair[0].params == alone.params and pair[1].params != alone.params
    # The pending point reaches the acquisition function (not only the exclusion list):
    # its value, and that of its neighbours, falls when it is pending.
    from autopeft_service.optimizers.saasbo import ProposalInfo

    opt = optimizer()
    encoding = opt.encoding
    near = encoding.to_index([alone.params])
    near = torch.cat([near, encoding.neighbours(near)])
    values = []
    for pending in ([], [alone.params]):
        acquisition = opt._build_acquisition(
            History(completed=history.completed, pending=pending), seed=0, info=ProposalInfo())
        with torch.no_grad():
            values.append(acquisition(encoding.to_unit(near).unsqueeze(-2)))
    assert values[1][0] < values[0][0] - 1.0  # log scale: the point itself adds nothing
    assert (values[1] < values[0]).float().mean() > 0.5


def test_a_failed_point_is_not_proposed_again() -> None:
    """The model never sees failed points, so only the exclusion keeps it from retrying."""
    history = sobol_history(12)
    (alone,) = optimizer().suggest(1, history)
    retry = optimizer().suggest(2, History(completed=history.completed, failed=[alone.params]))
    assert alone.params not in [s.params for s in retry]


def test_a_pruned_point_is_neither_score_nor_pending_and_not_proposed_again() -> None:
    """Early stopping's pruned trials: excluded from proposal, invisible to the model (the
    fit and the acquisition equal those of the history without them)."""
    history = sobol_history(12)
    (alone,) = optimizer().suggest(1, history)
    with_pruned = History(completed=history.completed, pruned=[alone.params])
    retry = optimizer().suggest(2, with_pruned)
    assert alone.params not in [s.params for s in retry]
    from autopeft_service.optimizers.saasbo import ProposalInfo

    opt = optimizer()
    near = opt.encoding.to_unit(opt.encoding.to_index([alone.params])).unsqueeze(-2)
    values = []
    for seen in (history, with_pruned):
        torch.manual_seed(0)  # as _model_suggest seeds the fit
        acquisition = opt._build_acquisition(seen, seed=0, info=ProposalInfo())
        with torch.no_grad():
            values.append(acquisition(near))
    assert torch.equal(values[0], values[1])


def test_pruned_points_count_toward_the_quasi_random_start() -> None:
    """8 completed + 4 pruned = the 12 initial trials: the model proposes next (counting
    only the completed ones, Sobol would)."""
    history = sobol_history(12)
    done, stopped = history.completed[:8], [o.params for o in history.completed[8:]]
    (model,) = optimizer(initial_trials=12).suggest(1, History(completed=done, pruned=stopped))
    assert model.generator == "saasbo"
    (sobol,) = optimizer(initial_trials=12).suggest(1, History(completed=done))
    assert sobol.generator == "sobol"


# ------------------------------------------------------------------ exactness


def test_encoding_round_trips_every_value_exactly() -> None:
    encoding = Encoding(SPACE)
    points = [s.params for s in SobolOptimizer(SPACE, seed=5).suggest(200, History())]
    index = encoding.to_index(points)
    unit = encoding.to_unit(index)
    assert unit.min() >= 0 and unit.max() <= 1
    assert torch.equal(encoding.unit_to_index(unit), index)
    assert [encoding.to_point(row) for row in encoding.unit_to_index(unit)] == points
    # Ordinal sizes are their index in the choice list over (choices - 1).
    top = {**points[0], "serial_adapter_size": SPACE.serial_adapter_sizes[-1]}
    column = encoding.names.index("serial_adapter_size")
    assert encoding.to_unit(encoding.to_index([top]))[0, column] == 1.0


def test_the_share_objective_is_the_exact_share_of_each_candidate() -> None:
    """qLogNEHVI's second objective at a candidate is the server's share, not a model."""
    from autopeft_service.optimizers.saasbo import ProposalInfo

    opt = optimizer()
    info = ProposalInfo()
    acquisition = opt._build_acquisition(sobol_history(12), seed=0, info=info)
    assert info.exact_share
    points = [s.params for s in SobolOptimizer(SPACE, seed=2).suggest(30, History())]
    X = opt.encoding.to_unit(opt.encoding.to_index(points)).unsqueeze(-2)  # 30 x 1 x D
    samples = torch.zeros(1, 30, 1, 1, 1, dtype=torch.float64)
    shares = -acquisition.objective(samples, X=X)[..., 1].reshape(-1)
    expected = torch.tensor([exact_share(p) for p in points], dtype=torch.float64)
    assert torch.equal(shares, expected)


def test_without_backbone_dims_a_share_gp_is_used() -> None:
    history = sobol_history(12)
    skewed = [Observation(params=o.params, score=o.score, param_share=o.param_share * 1.1 + i)
              for i, o in enumerate(history.completed)]
    opt = optimizer(exact=False)  # a study stored without backbone_dims
    batch = opt.suggest(2, History(completed=skewed))
    assert [s.generator for s in batch] == ["saasbo", "saasbo"]
    assert opt.last_info is not None and not opt.last_info.exact_share
    assert len(set(keys(batch))) == 2


def test_masked_nuts_model_has_botorch_saas_log_density() -> None:
    """The padded NumPyro model is BoTorch's SaasPyroModel plus a constant per padding row."""
    import math

    import jax.numpy as jnp
    import numpy as np
    from botorch.models.fully_bayesian import SaasPyroModel
    from numpyro.infer.util import log_density

    from autopeft_service.optimizers.saasbo import _saas_numpyro_model

    generator = torch.Generator().manual_seed(0)
    X = torch.rand(10, 5, generator=generator, dtype=torch.float64)
    Y = torch.randn(10, 1, generator=generator, dtype=torch.float64)
    reference = SaasPyroModel()
    reference.set_inputs(X, Y)
    params = {"outputscale": jnp.array(1.7), "mean": jnp.array(0.3), "noise": jnp.array(0.05),
              "kernel_tausq": jnp.array(0.4),
              "_kernel_inv_length_sq": jnp.array([2.0, 0.1, 0.5, 1.0, 3.0])}
    expected, _ = log_density(reference.sample, (), {}, params)
    Xp = np.zeros((16, 5), np.float32)
    Xp[:10] = X.numpy()
    Yp = np.zeros(16, np.float32)
    Yp[:10] = Y.numpy().ravel()
    mask = np.zeros(16, np.float32)
    mask[:10] = 1
    squared_differences = np.square(Xp[:, None, :] - Xp[None, :, :])
    got, _ = log_density(_saas_numpyro_model, (squared_differences, Yp, mask), {}, params)
    assert float(got) == pytest.approx(float(expected) - 6 * 0.5 * math.log(2 * math.pi),
                                       rel=1e-5)


def test_fast_single_candidate_values_equal_botorch_qlognehvi() -> None:
    opt = optimizer()
    history = sobol_history(14)
    pending = [s.params for s in SobolOptimizer(SPACE, seed=9).suggest(2, History())]
    from autopeft_service.optimizers.saasbo import ProposalInfo

    info = ProposalInfo()
    acquisition = opt._build_acquisition(History(completed=history.completed, pending=pending),
                                         seed=0, info=info)
    assert info.exact_share
    encoding = opt.encoding
    X = encoding.to_unit(encoding.random_valid(64, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        fast = SingleCandidateNehvi(acquisition)(X)
        reference = acquisition(X.unsqueeze(-2))
    assert torch.allclose(fast, reference, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ settings and factory


def test_factory_builds_saasbo_and_rejects_bad_settings() -> None:
    base = {"name": "s", "backbone": "b", "task": "synthetic", "backbone_dims": DIMS.model_dump(),
            "search_space": {"kind": "autopeft"},
            "budget": {"total_trials": 40, "initial_trials": 10},
            "reference_point": {"score": 0.5, "param_share": 3.0}}
    spec = StudySpec.model_validate({**base, "optimizer": {
        "name": "saasbo", "seed": 4, "settings": {"warmup_steps": 64, "mc_samples": 32}}})
    built = make_optimizer(spec)
    assert isinstance(built, SaasboOptimizer) and built.name == "saasbo"
    assert built.initial_trials == 10 and built.reference_point == (0.5, 3.0)
    assert built.settings.warmup_steps == 64 and built.settings.num_samples == 128
    assert built.sobol.seed == 4
    # The share is the server's, deployed by default: it counts the prefix as stored.
    point = next(iter(SobolOptimizer(SPACE).points()))
    assert built.share is not None
    assert built.share(point) == count_parameters(SPACE.decode(point), DIMS).deployed_percent
    for settings, match in [({"warmup": 1}, r"optimizer.settings: saasbo does not take"),
                            ({"num_samples": 0}, r"optimizer.settings.num_samples"),
                            ({"thinning": 1.5}, r"optimizer.settings.thinning"),
                            ({"num_samples": 8, "thinning": 16}, r"optimizer.settings.thinning"),
                            ({"seed": -1}, r"optimizer.settings.seed")]:
        with pytest.raises(ConfigError, match=match):
            make_optimizer(StudySpec.model_validate(
                {**base, "optimizer": {"name": "saasbo", "settings": settings}}))


# ------------------------------------------------------------------ quality


def test_saasbo_beats_sobol_on_a_problem_with_few_relevant_dimensions() -> None:
    """12 Sobol + 12 model points (batches of 4) against 24 Sobol points, three seeds."""
    saasbo, sobol = [], []
    for seed in range(3):
        saasbo.append(area(closed_loop(optimizer(seed=seed), total=24, batch=4)))
        sobol.append(area(closed_loop(SobolOptimizer(SPACE, seed=seed), total=24, batch=4)))
    assert statistics.median(saasbo) > statistics.median(sobol) + 0.1, (saasbo, sobol)
    assert sum(a > b for a, b in zip(saasbo, sobol, strict=True)) >= 2, (saasbo, sobol)
