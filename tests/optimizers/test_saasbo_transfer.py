"""Warm start's model (``optimizers/saasbo/transfer.py``, issue 32): the sources as other
tasks of a multi-task SAAS GP, the learned task correlation, and the negative-transfer
guard. The source's and the study's scores are functions of the point, so the relation
between the tasks is known: the same task on another scale, or none."""

from __future__ import annotations

import hashlib

import pytest
import torch

from autopeft_service.optimizers.base import History, Observation, Point, TransferObservation
from autopeft_service.optimizers.saasbo import SaasboSettings
from autopeft_service.optimizers.saasbo.nuts import nuts_samples
from autopeft_service.optimizers.saasbo.transfer import (
    GUARD_MIN_TARGET,
    source_front,
    source_rows,
    task_correlations,
)
from autopeft_service.optimizers.sobol import SobolOptimizer
from tests.optimizers.test_saasbo import SPACE, exact_share, observe, optimizer

#: Enough NUTS samples (8) for a stable task correlation, still cheap.
SETTINGS = SaasboSettings(warmup_steps=64, num_samples=64, thinning=8, mc_samples=32,
                          candidates=256, restarts=4)
SOURCE = 7


def related(point: Point) -> float:
    """The study's own task on another scale: a source scored 0.3 + score / 2."""
    return 0.3 + 0.5 * observe(point).score


def unrelated(point: Point) -> float:
    """A score with no relation to the study's: a hash of the point, in [0.5, 0.9)."""
    digest = hashlib.blake2b(repr(sorted(point.items())).encode(), digest_size=8).digest()
    return 0.5 + 0.4 * int.from_bytes(digest, "little") / 2**64


def source_history(score: object, count: int = 40, seed: int = 5
                   ) -> list[TransferObservation]:
    points = [s.params for s in SobolOptimizer(SPACE, seed=seed).suggest(count, History())]
    return [TransferObservation(source=SOURCE, number=i, params=p, score=score(p),  # type: ignore[operator]
                                share=exact_share(p)) for i, p in enumerate(points)]


def own_history(count: int, seed: int = 11) -> list[Observation]:
    points = [s.params for s in SobolOptimizer(SPACE, seed=seed).suggest(count, History())]
    return [observe(p) for p in points]


def test_the_start_interleaves_the_sources_front_best_first_with_the_cold_sobol_points(
        ) -> None:
    transfer = source_history(related)
    suggestions = optimizer(settings=SETTINGS).suggest(4, History(transfer=transfer))
    front = source_front(transfer)
    cold = optimizer(settings=SETTINGS).suggest(2, History())
    assert [s.generator for s in suggestions] == [
        f"transfer:{SOURCE}#{front[0].number}", "sobol",
        f"transfer:{SOURCE}#{front[1].number}", "sobol"]
    assert [s.params for s in suggestions] == [dict(front[0].params), cold[0].params,
                                               dict(front[1].params), cold[1].params]
    assert front[0].score == max(r.score for r in transfer)  # the best source score first
    # a restart continues the sequence: the history holds the first two
    done = [observe(s.params) for s in suggestions[:2]]
    [third] = optimizer(settings=SETTINGS).suggest(
        1, History(completed=done, pending=[suggestions[2].params, suggestions[3].params],
                   transfer=transfer))
    assert third.params == dict(front[2].params)


def test_a_warm_proposal_differs_from_the_cold_one_and_learns_a_high_correlation() -> None:
    own = own_history(4)
    cold = optimizer(initial_trials=2, settings=SETTINGS).suggest(1, History(completed=own))
    warm_optimizer = optimizer(initial_trials=2, settings=SETTINGS)
    warm = warm_optimizer.suggest(1, History(completed=own, transfer=source_history(related)))
    assert warm[0].generator == "saasbo"
    assert warm[0].params != cold[0].params
    report = warm[0].transfer
    assert report is not None and report.used and report.target_trials == 4
    assert report.correlations[SOURCE] > 0.6, report


def opposed(point: Point) -> float:
    """The study's task upside down: what is good there is bad here."""
    return 1.2 - related(point)


@pytest.mark.parametrize("score", [unrelated, opposed])
def test_the_guard_drops_an_unrelated_source_and_the_study_proposes_as_a_cold_one(
        score: object) -> None:
    own = own_history(16)
    cold = optimizer(initial_trials=2, settings=SETTINGS).suggest(2, History(completed=own))
    warm = optimizer(initial_trials=2, settings=SETTINGS).suggest(
        2, History(completed=own, transfer=source_history(score)))
    report = warm[0].transfer
    assert report is not None and not report.used, report
    assert report.predictive[SOURCE] < 0.3 and report.dropped == (SOURCE,)
    assert [s.params for s in warm] == [s.params for s in cold]  # exactly the cold search


def test_a_related_source_survives_the_guard() -> None:
    own = own_history(GUARD_MIN_TARGET + 2)
    warm = optimizer(initial_trials=2, settings=SETTINGS).suggest(
        1, History(completed=own, transfer=source_history(related)))
    report = warm[0].transfer
    assert report is not None and report.used and not report.dropped
    assert report.predictive[SOURCE] > 0.8 and report.correlations[SOURCE] >= 0.3


def test_the_guard_waits_for_enough_own_scores() -> None:
    own = own_history(GUARD_MIN_TARGET - 1)
    warm = optimizer(initial_trials=2, settings=SETTINGS).suggest(
        1, History(completed=own, transfer=source_history(unrelated)))
    report = warm[0].transfer
    assert report is not None and report.used and report.predictive == {}


def test_source_rows_keep_each_front_and_an_even_spread_within_the_limit() -> None:
    transfer = source_history(related, count=40) + [
        TransferObservation(SOURCE + 1, r.number, r.params, r.score, r.share)
        for r in source_history(unrelated, count=30, seed=9)]
    kept = source_rows(transfer, limit=20)
    assert len(kept) == 20
    assert {r.source for r in kept} == {SOURCE, SOURCE + 1}
    assert sum(r.source == SOURCE for r in kept) == 10
    best = max((r for r in transfer if r.source == SOURCE), key=lambda r: r.score)
    assert best in kept  # the front is always in
    assert source_rows(transfer, limit=20) == kept  # deterministic
    assert source_rows(transfer[:5], limit=20) == transfer[:5]  # all when within the limit


def test_multitask_nuts_samples_give_correlations_in_zero_one() -> None:
    generator = torch.Generator().manual_seed(0)
    X = torch.rand(24, 3, generator=generator, dtype=torch.float64)
    tasks = torch.tensor([0] * 16 + [1] * 8)
    Y = torch.sin(6 * X[:, :1])
    samples, stats = nuts_samples(X, (Y - Y.mean()) / Y.std(), SETTINGS, seed=0, tasks=tasks,
                                  num_tasks=2)
    assert samples["mean"].shape == (8, 2)
    assert samples["latent_features"].shape == (8, 2, 2)
    correlation = task_correlations(samples["latent_features"], samples["task_lengthscale"])
    assert torch.allclose(correlation.diagonal(), torch.ones(2, dtype=torch.float64))
    assert 0.0 < float(correlation[0, 1]) <= 1.0
    assert stats.leapfrog_steps > 0


@pytest.mark.parametrize("count", [0, 1])
def test_too_few_own_scores_keep_to_the_initial_design(count: int) -> None:
    own = own_history(count)
    history = History(completed=own, transfer=source_history(related))
    suggestions = optimizer(settings=SETTINGS).suggest(2, history)
    assert all(s.generator.startswith("transfer:") or s.generator == "sobol"
               for s in suggestions)
    assert not optimizer(settings=SETTINGS).needs_model(2, history)


def test_a_study_without_exact_shares_models_them_beside_the_warm_model() -> None:
    """A study stored without backbone dimensions: the share GP joins the multi-task GP in
    a model list, and the warm proposal is still new and valid."""
    own = own_history(3)
    history = History(completed=own, transfer=source_history(related))
    [suggestion] = optimizer(initial_trials=2, settings=SETTINGS, exact=False).suggest(
        1, history)
    assert suggestion.generator == "saasbo" and suggestion.transfer is not None
    assert SPACE.is_valid(suggestion.params)
    assert suggestion.params not in [o.params for o in own]
