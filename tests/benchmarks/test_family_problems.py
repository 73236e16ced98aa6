"""The search-quality problems on the space families (benchmarks/synthetic_problem.py's
``FamilyProblem``) and every method of benchmarks/search_quality.py on them."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.share import share_percent
from autopeft_service.optimizers.saasbo import SaasboSettings
from tests.benchmarks.conftest import load_benchmark

sq = load_benchmark("search_quality")
sp = load_benchmark("synthetic_problem")

FAMILIES = sorted(sp.FAMILY_PROBLEMS)
CHEAP = SaasboSettings(warmup_steps=32, num_samples=16, thinning=8, mc_samples=32,
                       candidates=128, restarts=2)


def _first(problem: Any, **values: Any) -> dict[str, Any]:
    """The point with every parameter at its first value, then ``values``."""
    point = {p.name: p.values[0] for p in problem.space.parameters()}
    point.update(values)
    assert problem.space.is_valid(point), problem.space.validity_error(point)
    return point


#: Per family: a base point and the size parameter swept along its values (the top
#: layers' module).
SWEEPS = {
    "synthetic-unified": ({"layer_4": 1, "layer_5": 1, "ffn_function": "serial_adapter"},
                          ["ffn_size"]),
    "synthetic-lora": ({"target_query": 1, "target_value": 1, "alpha_per_rank": 2.0,
                        "rank_layer_4": 1, "rank_layer_5": 1}, ["rank_layer_4", "rank_layer_5"]),
    "synthetic-design": ({"groups": 1, "group_0_tuned": 1, "group_0_adapter": 1}, ["budget"]),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_scores_are_noisy_reproducible_and_accuracy_like(name: str) -> None:
    problem = sq.make_problem(name, sq.DEFAULT_TABLE, seed=3)
    point = problem.sobol(1, seed=0)[0]
    first, second = problem.observe(point), problem.observe(point)
    assert first is not None and second is not None
    assert first.score != second.score  # a repeated evaluation draws new noise
    assert first.param_share == second.param_share
    again = sq.make_problem(name, sq.DEFAULT_TABLE, seed=3)
    assert [again.observe(point).score for _ in range(2)] == [first.score, second.score]
    other_seed = sq.make_problem(name, sq.DEFAULT_TABLE, seed=4).observe(point)
    assert other_seed.score != first.score
    noise = [problem.observe(point).score - problem.noiseless(point) for _ in range(300)]
    assert 0.008 < statistics.stdev(noise) < 0.012  # sd 0.01
    assert abs(statistics.mean(noise)) < 0.003
    for p in problem.sobol(40, seed=1):
        assert 0.55 <= problem.noiseless(p) <= 0.93 + 1e-9


@pytest.mark.parametrize("name", FAMILIES)
def test_share_is_the_exact_deployed_share(name: str) -> None:
    problem = sq.make_problem(name, sq.DEFAULT_TABLE)
    for point in problem.sobol(10, seed=2):
        observation = problem.observe(point)
        assert observation.param_share == share_percent(problem.space.decode(point),
                                                        MINILM_DIMS, "deployed")
    assert problem.space.num_layers == MINILM_DIMS.num_layers == 6


@pytest.mark.parametrize("name", FAMILIES)
def test_score_peaks_at_a_moderate_size_and_falls_beyond(name: str) -> None:
    problem = sq.make_problem(name, sq.DEFAULT_TABLE)
    base, swept = SWEEPS[name]
    values = next(p.values for p in problem.space.parameters() if p.name == swept[0])
    points = [_first(problem, **{**base, **{s: v for s in swept}}) for v in values
              if v != 0]
    scores = [problem.noiseless(p) for p in points]
    shares = [problem.share(p) for p in points]
    assert shares == sorted(shares) and len(set(shares)) == len(shares)
    peak = scores.index(max(scores))
    assert 0 < peak < len(scores) - 1  # neither the smallest nor the largest size
    assert scores[-1] < max(scores) - 0.02  # the largest size loses clearly
    assert all(a < b for a, b in zip(scores[:peak], scores[1:peak + 1], strict=True))


def test_most_parameters_have_no_effect_on_the_score() -> None:
    unified = sq.make_problem("synthetic-unified", sq.DEFAULT_TABLE)
    point = _first(unified, layer_4=1, layer_5=1, ffn_function="parallel_adapter",
                   ffn_size=16, ffn_scale=4.0)
    same = [_first(unified, **{**point, "layer_0": 1, "layer_2": 1}),
            _first(unified, **{**point, "ffn_learned_scale": 1})]
    for other in same:
        assert unified.noiseless(other) == unified.noiseless(point)
    assert unified.share(same[0]) > unified.share(point)
    assert unified.noiseless(_first(unified, **{**point, "ffn_scale": 1.0})) \
        < unified.noiseless(point)  # the parallel adapter's scale matters
    lora = sq.make_problem("synthetic-lora", sq.DEFAULT_TABLE)
    point = _first(lora, target_query=1, target_value=1, rank_layer_5=8, alpha_per_rank=2.0)
    for name in ("rank_layer_0", "rank_layer_3"):
        assert lora.noiseless(_first(lora, **{**point, name: 64})) == lora.noiseless(point)
    assert lora.noiseless(_first(lora, **{**point, "target_key": 1})) == lora.noiseless(point)
    assert lora.noiseless(_first(lora, **{**point, "rank_layer_4": 8})) > lora.noiseless(point)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", sq.METHOD_NAMES)
def test_every_method_runs_on_every_family(name: str, method: str) -> None:
    problem = sq.make_problem(name, sq.DEFAULT_TABLE, seed=0)
    # saasbo, Ax and TPE start with 4 quasi-random points here; 12 evaluations give
    # saasbo and TPE a model-based batch (Ax stays in its start: its GP takes minutes)
    evaluations = 8 if method == "ax-default" else 12
    runner = sq.make_method(method, problem, seed=0, settings=CHEAP,
                            initial=4 if method != "ax-default" else 10)
    result = sq.run_search(problem, runner, evaluations=evaluations)
    assert len(result["hypervolume"]) == evaluations
    assert len(result["observed_hypervolume"]) == evaluations
    assert result["hypervolume"][-1] > 0
    if method == "saasbo":
        assert runner.optimizer.share == problem.share  # the exact share, as the server
        assert runner.optimizer.last_info is not None  # the model proposed a batch
    if method in ("random", "saasbo"):
        assert result["invalid"] == 0 and result["repeated"] == 0


def test_adapters_canonicalise_and_report_invalid_points_as_failed() -> None:
    problem = sq.make_problem("synthetic-design", sq.DEFAULT_TABLE, seed=0)
    runner = sq.make_method("optuna-tpe", problem, seed=0)
    result = sq.run_search(problem, runner, evaluations=16)
    assert result["invalid"] > 0  # uniform draws break the design rules now and then
    states = [t.state.name for t in runner.study.trials]
    # the last call (proposing batch 4) was told batches 1-2; batch 3 was pending
    assert states[:8].count("FAIL") + states[:8].count("COMPLETE") == 8
    assert states[:8].count("FAIL") == sum(
        not problem.space.is_valid(runner.sample(t)) for t in runner.study.trials[:8])
    assert set(states[8:]) == {"RUNNING"}
    categorical = [p.name for p in problem.space.parameters()
                   if p.kind is sq.ParameterKind.CATEGORICAL]
    assert all(isinstance(t.params["allocation"], str) for t in runner.study.trials)
    assert categorical == ["pattern", "allocation"]
    # a non-canonical point from the sampler is evaluated in canonical form
    point = _first(problem, group_0_tuned=1, group_0_adapter=1, budget=0.5)
    loose = {**point, "pattern": "spindle"}  # G = 1: the pattern has no effect
    assert not problem.space.is_valid(loose)
    assert problem.space.canonical(loose) == point


def test_ax_sees_categoricals_as_unordered_choices_and_the_linear_rules() -> None:
    problem = sq.make_problem("synthetic-unified", sq.DEFAULT_TABLE)
    assert sq.linear_constraints(problem.space) == [
        " + ".join(f"layer_{i}" for i in range(6)) + " >= 1"]
    lora = sq.make_problem("synthetic-lora", sq.DEFAULT_TABLE)
    assert sq.linear_constraints(lora.space) == [
        "target_query + target_key + target_value + target_attention_output + target_ffn_in"
        " + target_ffn_out >= 1", " + ".join(f"rank_layer_{i}" for i in range(6)) + " >= 1"]
    autopeft = sq.SyntheticProblem(15)
    assert sq.linear_constraints(autopeft.space) == [
        " + ".join(f"layer_{i}" for i in range(12)) + " >= 1",
        "serial_adapter_size + parallel_adapter_size + prefix_length >= 1"]
    runner = sq.AxDefault(problem, seed=0)
    point = runner.to_point({**{f"layer_{i}": 1 for i in range(6)},
                             "attention_function": "none", "attention_size": 3,
                             "attention_scale": 2, "attention_learned_scale": 1,
                             "ffn_function": "parallel_adapter", "ffn_size": 4,
                             "ffn_scale": 2, "ffn_learned_scale": 1})
    assert problem.space.is_valid(point)
    assert point["attention_size"] == 1 and point["attention_scale"] == 1.0  # canonical
    assert point["ffn_size"] == 16 and point["ffn_scale"] == 4.0 and point["ffn_learned_scale"] == 1


def test_hypervolume_of_a_noisy_problem_is_on_the_noise_free_score() -> None:
    problem = sq.make_problem("synthetic-lora", sq.DEFAULT_TABLE, seed=0)
    result = sq.run_search(problem, sq.make_method("random", problem, seed=0), evaluations=8)
    fresh = sq.make_problem("synthetic-lora", sq.DEFAULT_TABLE, seed=0)
    points = fresh.sobol(8, seed=0)
    truth = [sq.ObjectivePoint(fresh.noiseless(p), fresh.share(p)) for p in points]
    reference = sq.ObjectivePoint(*fresh.reference)
    assert result["hypervolume"][-1] == pytest.approx(sq.hypervolume(truth, reference))
    assert result["observed_hypervolume"][-1] != result["hypervolume"][-1]
