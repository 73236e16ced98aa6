"""Warm start's model (``warm_start.mode: model``, issue 32): the source studies' scores as
other tasks of a multi-task SAAS GP, and a guard against negative transfer.

The model is BoTorch's ``SaasFullyBayesianMultiTaskGP`` (the SAAS data kernel times an ICM
task covariance over sampled latent task features, a mean per task), its hyperparameters
sampled by this package's NUTS (``nuts.py``, the same priors). One task per source study,
the study's own task last. Each task's scores are standardised on their own (a source
scored on another metric or scale still correlates); the study's own are standardised by
the sources' pooled statistics until it has two distinct scores.

What the model learns of the sources is their task correlation with this study: the
posterior mean over the NUTS samples of the task covariance's entry (in (0, 1]: the
latent-feature kernel cannot anti-correlate). It is identified when the tasks are related
or opposed, but stays near its prior (about 0.5) for an unrelated source even at 16 scores
of the study's own (measured: same task 0.82 / 0.94 at 8 / 16 own scores, opposed 0.36 /
0.10, unrelated 0.48-0.61). So the negative-transfer guard asks the data directly: once the
study has ``GUARD_MIN_TARGET`` scores, a GP fitted on each source alone predicts at the
study's points, and a source whose predictions correlate with the study's scores below
``GUARD_MIN_CORRELATION`` is dropped before the multi-task fit (and one whose model
correlation falls below it after). With no source left, the study's own SAAS GP proposes,
exactly as a cold study's would.

Reference: Swersky, Snoek & Adams, "Multi-Task Bayesian Optimization", NeurIPS 2013 (the
ICM multi-task GP for transfer across tasks); Eriksson & Jankowiak, UAI 2021 (SAAS).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from autopeft_service.optimizers.base import (
    History,
    Observation,
    TransferObservation,
    TransferReport,
)
from autopeft_service.optimizers.saasbo.encoding import Encoding
from autopeft_service.optimizers.saasbo.nuts import (
    NutsStats,
    load_samples,
    nuts_samples,
    task_covariance,
)
from autopeft_service.optimizers.saasbo.settings import SaasboSettings

__all__ = ["GUARD_MIN_CORRELATION", "GUARD_MIN_TARGET", "MAX_SOURCE_ROWS", "TransferModel",
           "fit_transfer_model", "guarded_transfer_model", "predictive_correlation",
           "source_front", "source_rows", "task_correlations"]

#: Source observations the model sees at most, over all sources (NUTS costs the cube of the
#: rows): an even spread over each source's trials, its observed front always in.
MAX_SOURCE_ROWS = 96
#: The guard judges the sources once the study has this many completed trials (before, the
#: correlation is mostly the prior's).
GUARD_MIN_TARGET = 6
#: A source whose posterior-mean task correlation is below this is dropped by the guard.
GUARD_MIN_CORRELATION = 0.3


@dataclass
class TransferModel:
    """A fitted warm-start model and how to read it.

    Attributes:
        gp: the fitted ``SaasFullyBayesianMultiTaskGP``; its posterior (at points without a
            task column) is the study's own task, standardised.
        score_mean: the study's score = ``score_mean + score_scale *`` the model's output.
        score_scale: see ``score_mean``.
        report: the learned task correlations, and whether the sources were used.
        nuts: what the fit cost.
    """

    gp: Any
    score_mean: float
    score_scale: float
    report: TransferReport
    nuts: NutsStats


def source_rows(transfer: Sequence[TransferObservation],
                limit: int = MAX_SOURCE_ROWS) -> list[TransferObservation]:
    """At most ``limit`` source observations, shared evenly among the sources: each
    source's observed front (score up, share down) first, then an even spread over its
    trials by number. Deterministic, so a restart refits the same data."""
    from autopeft_service.domain.pareto import ObjectivePoint, pareto_indices

    by_source: dict[int, list[TransferObservation]] = {}
    for row in transfer:
        by_source.setdefault(row.source, []).append(row)
    if not by_source:
        return []
    quota = max(1, limit // len(by_source))
    out: list[TransferObservation] = []
    for rows in by_source.values():
        rows = sorted(rows, key=lambda r: r.number)
        if len(rows) <= quota:
            out += rows
            continue
        front = set(pareto_indices([ObjectivePoint(score=r.score, share=r.share)
                                    for r in rows]))
        keep = sorted(front, key=lambda i: -rows[i].score)[:quota]
        rest = [i for i in range(len(rows)) if i not in front]
        room = quota - len(keep)
        if room > 0 and rest:
            step = len(rest) / room
            keep += [rest[int(k * step)] for k in range(room)]
        out += [rows[i] for i in sorted(keep)]
    return out


def _standardise(values: Tensor) -> tuple[Tensor, float, float]:
    """``values`` z-scored, with the mean and scale used (scale 1 for constant values)."""
    mean = float(values.mean())
    scale = float(values.std()) if values.numel() > 1 else 0.0
    scale = scale if scale > 1e-9 else 1.0
    return (values - mean) / scale, mean, scale


def fit_transfer_model(encoding: Encoding, rows: Sequence[TransferObservation],
                       completed: Sequence[Observation], settings: SaasboSettings,
                       seed: int, drop: Sequence[int] = ()) -> TransferModel | None:
    """Fit the multi-task SAAS GP on the source rows (minus ``drop``) and the study's
    completed trials.

    Args:
        encoding: the study's encoding (source points are already in its space).
        rows: the source observations the model sees (``source_rows``).
        completed: the study's completed trials.
        settings: NUTS settings.
        seed: NUTS seed.
        drop: source study ids left out (the guard's earlier verdict).

    Returns:
        The fitted model, or None when no source observation is left.
    """
    from botorch.models.fully_bayesian_multitask import SaasFullyBayesianMultiTaskGP

    dropped = set(drop)
    sources = [row for row in rows if row.source not in dropped]
    if not sources:
        return None
    source_ids = sorted({row.source for row in sources})
    task_of = {source: task for task, source in enumerate(source_ids)}
    target_task = len(source_ids)

    blocks_X: list[Tensor] = []
    blocks_Y: list[Tensor] = []
    tasks: list[int] = []
    raw_source_scores: list[float] = []
    for source in source_ids:
        of_source = [row for row in sources if row.source == source]
        scores = torch.tensor([row.score for row in of_source], dtype=torch.float64)
        raw_source_scores += scores.tolist()
        blocks_X.append(encoding.to_unit(encoding.to_index([row.params for row in of_source])))
        blocks_Y.append(_standardise(scores)[0])
        tasks += [task_of[source]] * len(of_source)

    target = torch.tensor([o.score for o in completed], dtype=torch.float64)
    if target.numel() >= 2 and float(target.std()) > 1e-9:
        target_z, mean, scale = _standardise(target)
    else:  # too few distinct scores of its own: the sources' pooled scale
        _, mean, scale = _standardise(torch.tensor(raw_source_scores, dtype=torch.float64))
        target_z = (target - mean) / scale
    if completed:
        blocks_X.append(encoding.to_unit(encoding.to_index([o.params for o in completed])))
        blocks_Y.append(target_z)
        tasks += [target_task] * len(completed)

    X = torch.cat(blocks_X)
    Y = torch.cat(blocks_Y).unsqueeze(-1)
    task_column = torch.tensor(tasks, dtype=torch.float64).unsqueeze(-1)
    num_tasks = target_task + 1
    gp = SaasFullyBayesianMultiTaskGP(torch.cat([X, task_column], dim=-1), Y,
                                      task_feature=-1, output_tasks=[target_task],
                                      all_tasks=list(range(num_tasks)), rank=num_tasks)
    samples, stats = nuts_samples(X, Y, settings, seed,
                                  tasks=torch.tensor(tasks), num_tasks=num_tasks)
    load_samples(gp, samples)
    correlations = task_correlations(samples["latent_features"], samples["task_lengthscale"])
    report = TransferReport(
        correlations={source: round(float(correlations[task_of[source], target_task]), 4)
                      for source in source_ids},
        predictive={}, dropped=tuple(drop), used=True, target_trials=len(completed))
    return TransferModel(gp=gp, score_mean=mean, score_scale=scale, report=report, nuts=stats)


def task_correlations(latent_features: Tensor, task_lengthscale: Tensor) -> Tensor:
    """The posterior-mean task correlation matrix (``T x T``) of NUTS samples
    (``S x T x T`` latent features, ``S x T`` lengthscales): the mean of the task
    covariance the NUTS model used (``nuts.task_covariance``)."""
    import numpy as np

    covariance = task_covariance(latent_features.detach().cpu().numpy(),
                                 task_lengthscale.detach().cpu().numpy())
    return torch.tensor(np.asarray(covariance), dtype=latent_features.dtype).mean(0)


def predictive_correlation(encoding: Encoding, rows: Sequence[TransferObservation],
                           completed: Sequence[Observation]) -> float:
    """How well one source predicts this study: the Pearson correlation between a GP fitted
    on the source's rows alone (MAP, BoTorch's ``SingleTaskGP``) predicting at the study's
    completed points and the study's scores there (0 when either side is constant)."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    X = encoding.to_unit(encoding.to_index([row.params for row in rows]))
    Y = torch.tensor([row.score for row in rows], dtype=torch.float64).unsqueeze(-1)
    gp = SingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
    with torch.no_grad():
        at = encoding.to_unit(encoding.to_index([o.params for o in completed]))
        predicted = gp.posterior(at).mean.reshape(-1)
    own = torch.tensor([o.score for o in completed], dtype=torch.float64)
    if float(predicted.std()) < 1e-12 or float(own.std()) < 1e-12:
        return 0.0
    return float(torch.corrcoef(torch.stack([predicted, own]))[0, 1])


def guarded_transfer_model(encoding: Encoding, history: History, settings: SaasboSettings,
                           seed: int) -> tuple[TransferModel | None, TransferReport]:
    """The warm-start model after the negative-transfer guard (module docstring).

    Returns:
        The model to propose with (None: every source was dropped, and the study's own
        model proposes) and the report to show.
    """
    completed = history.completed
    rows = source_rows(history.transfer)
    predictive: dict[int, float] = {}
    if len(completed) >= GUARD_MIN_TARGET:
        for source in sorted({row.source for row in rows}):
            predictive[source] = round(predictive_correlation(
                encoding, [row for row in rows if row.source == source], completed), 4)
    dropped = [source for source, r in predictive.items() if r < GUARD_MIN_CORRELATION]
    model = fit_transfer_model(encoding, rows, completed, settings, seed, drop=dropped)
    if model is not None and predictive:
        weak = [source for source, rho in model.report.correlations.items()
                if rho < GUARD_MIN_CORRELATION]
        if weak:  # related by the check, not by the model: out as well
            dropped += weak
            first = model.report.correlations
            model = fit_transfer_model(encoding, rows, completed, settings, seed, drop=dropped)
            if model is not None:
                model.report = dataclasses.replace(
                    model.report, correlations={**first, **model.report.correlations})
    if model is None:
        return None, TransferReport(correlations={}, predictive=predictive,
                                    dropped=tuple(dropped), used=False,
                                    target_trials=len(completed))
    model.report = dataclasses.replace(model.report, predictive=predictive,
                                       dropped=tuple(dropped))
    return model, model.report


def source_front(transfer: Sequence[TransferObservation]) -> list[TransferObservation]:
    """The sources' observed fronts (score up, share down, each source's scores z-scored
    so that sources on different scales interleave), best score first: a warm-started
    study's first trials, before it has scores of its own to fit."""
    from autopeft_service.domain.pareto import ObjectivePoint, pareto_indices

    by_source: dict[int, list[TransferObservation]] = {}
    for row in transfer:
        by_source.setdefault(row.source, []).append(row)
    ranked: list[tuple[float, TransferObservation]] = []
    for rows in by_source.values():
        z = _standardise(torch.tensor([r.score for r in rows], dtype=torch.float64))[0]
        front = pareto_indices([ObjectivePoint(score=r.score, share=r.share) for r in rows])
        ranked += [(float(z[i]), rows[i]) for i in front]
    ranked.sort(key=lambda pair: (-pair[0], pair[1].source, pair[1].number))
    return [row for _, row in ranked]
