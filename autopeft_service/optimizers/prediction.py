"""The model's view of a study's scores: the posterior of each evaluated configuration's
score at full training, with an interval.

One observed score is one noisy draw: the best observed points of a front are partly the
ones that drew good noise. A GP fitted to every observation, its noise learned from the
data (replicates and neighbours tell it apart from signal), predicts each evaluated
configuration's noise-free score; the **model-predicted front** is the front of those
predictions (as Ax's ``use_model_predictions``). In a fidelity study every observation
enters with its level as an input (BoTorch's ``SingleTaskMultiFidelityGP``, a
linear-truncated kernel over training iterations), and the prediction is at level 1, so a
paused trial's low-level score informs its full-training prediction.

The interval is the latent score's central ``level`` interval (mean ± z sd, without the
observation noise: it is about the score a configuration *has*, not the next draw).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autopeft_service.domain.spaces import SearchSpaceBase
from autopeft_service.optimizers.base import Point, ScoreObservation

__all__ = ["MIN_OBSERVATIONS", "FullTrainingPosterior", "PredictedScore", "ScoreObservation",
           "posterior_at_full", "posterior_at_levels", "predict_points", "predict_scores"]

#: Fewest distinct observations a prediction needs (a GP on fewer says nothing useful).
MIN_OBSERVATIONS = 3
DEFAULT_LEVEL = 0.90


@dataclass(frozen=True)
class PredictedScore:
    """The posterior of a configuration's score at full training.

    Attributes:
        mean: posterior mean.
        low, high: the central ``level`` interval.
        level: its coverage (0.9 by default).
    """

    mean: float
    low: float
    high: float
    level: float


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def _fit(space: SearchSpaceBase, observations: Sequence[ScoreObservation]) -> Any:
    """The GP fitted to the observations, its encoding and whether it has a level input."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP, SingleTaskMultiFidelityGP
    from botorch.models.transforms import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from autopeft_service.optimizers.saasbo.encoding import Encoding

    encoding = Encoding(space)
    unit = encoding.to_unit(encoding.to_index([o.params for o in observations])).double()
    scores = torch.tensor([[o.score] for o in observations], dtype=torch.double)
    fidelities = torch.tensor([[o.fidelity] for o in observations], dtype=torch.double)
    multi = bool((fidelities < 1).any())
    model: SingleTaskGP
    if multi:
        X = torch.cat([unit, fidelities], dim=-1)
        model = SingleTaskMultiFidelityGP(X, scores, iteration_fidelity=X.shape[-1] - 1,
                                          outcome_transform=Standardize(m=1))
    else:
        model = SingleTaskGP(unit, scores, outcome_transform=Standardize(m=1))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model, encoding, multi


@dataclass(frozen=True)
class FullTrainingPosterior:
    """The model's view of some points' scores at full training.

    Attributes:
        means: posterior mean per point.
        sds: posterior sd of the latent (noise-free) score per point.
        noise_sds: sd of one new observation's noise at each point (the learned noise),
            what a replicate's draw adds on top of the latent score.
    """

    means: list[float]
    sds: list[float]
    noise_sds: list[float]


def posterior_at_full(space: SearchSpaceBase, observations: Sequence[ScoreObservation],
                      points: Sequence[Point], seed: int = 0) -> FullTrainingPosterior | None:
    """Fit the GP to the observations and give each point's posterior at full training.

    Args:
        space: the study's search space (the points' encoding).
        observations: every score so far (any levels; replicates allowed).
        points: where to predict.
        seed: torch seed of the fit (same data, same answer).

    Returns:
        The posterior in the points' order; None with fewer than ``MIN_OBSERVATIONS``
        observations.
    """
    return _posterior(space, observations, [(p, 1.0) for p in points], seed)


def posterior_at_levels(space: SearchSpaceBase, observations: Sequence[ScoreObservation],
                        at: Sequence[tuple[Point, float]], seed: int = 0
                        ) -> tuple[list[float], list[float]] | None:
    """The posterior mean and latent sd of the score of each (point, level) pair.

    Args:
        space: the study's search space.
        observations: every score so far.
        at: the (point, training level) pairs to predict; levels are ignored when every
            observation is at full training (the model then has no level input).
        seed: torch seed of the fit.

    Returns:
        (means, sds) in ``at``'s order; None with fewer than ``MIN_OBSERVATIONS``
        observations.
    """
    posterior = _posterior(space, observations, at, seed)
    return None if posterior is None else (posterior.means, posterior.sds)


def _posterior(space: SearchSpaceBase, observations: Sequence[ScoreObservation],
               at: Sequence[tuple[Point, float]], seed: int) -> FullTrainingPosterior | None:
    """Fit the GP; each (point, level) pair's mean, latent sd and noise sd (None with
    fewer than ``MIN_OBSERVATIONS`` observations)."""
    if len(observations) < MIN_OBSERVATIONS:
        return None
    import torch  # lazily: the API imports this module, and must start without torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model, encoding, multi = _fit(space, observations)
        X = encoding.to_unit(encoding.to_index([p for p, _ in at])).double()
        if multi:
            levels = torch.tensor([[level] for _, level in at], dtype=torch.double)
            X = torch.cat([X, levels], dim=-1)
        with torch.no_grad():
            latent = model.posterior(X, observation_noise=False)
            observed = model.posterior(X, observation_noise=True)
            mean = latent.mean.squeeze(-1)
            variance = latent.variance.clamp_min(0).squeeze(-1)
            # the learned noise, in score units (the outcome transform undone)
            noise = (observed.variance.squeeze(-1) - variance).clamp_min(0)
    return FullTrainingPosterior([float(v) for v in mean],
                                 [float(v) for v in variance.sqrt()],
                                 [float(v) for v in noise.sqrt()])


def predict_points(space: SearchSpaceBase, observations: Sequence[ScoreObservation],
                   points: Sequence[Point], seed: int = 0
                   ) -> tuple[list[float], list[float]] | None:
    """The posterior mean and sd of the score at full training of each point.

    Returns:
        (means, sds) in the points' order; None with fewer than ``MIN_OBSERVATIONS``
        observations.
    """
    posterior = posterior_at_full(space, observations, points, seed)
    return None if posterior is None else (posterior.means, posterior.sds)


def predict_scores(space: SearchSpaceBase, observations: Sequence[ScoreObservation],
                   level: float = DEFAULT_LEVEL, seed: int = 0) -> dict[int, PredictedScore]:
    """Fit a GP to the observations; predict each observed trial's score at full training.

    Args:
        space: the study's search space (the points' encoding).
        observations: every score (several per trial in a fidelity study).
        level: the interval's coverage, in (0, 1).
        seed: torch seed of the fit (same data, same answer).

    Returns:
        trial id -> prediction; empty with fewer than ``MIN_OBSERVATIONS`` observations.

    Raises:
        ValueError: a level outside (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    trials: dict[int, Point] = {}
    for o in observations:
        trials.setdefault(o.trial_id, o.params)
    ids = list(trials)
    predicted = predict_points(space, observations, [trials[i] for i in ids], seed)
    if predicted is None:
        return {}
    z = _z(level)
    out = {}
    for trial_id, m, s in zip(ids, *predicted, strict=True):
        if math.isfinite(m) and math.isfinite(s):
            out[trial_id] = PredictedScore(mean=m, low=m - z * s, high=m + z * s, level=level)
    return out
