"""Paired comparisons of configurations over seeds: bootstrap CIs, Holm and verdicts.

The statistics behind ``autopeft compare`` (and ``autopeft retrain --compare``). Every arm is
trained once per seed, and a seed fixes the training subset and the initialisation for all
arms alike, so the scores of two arms at one seed are a *pair*. For a candidate against a
baseline the evidence is the vector of paired differences ``d_k = candidate_k -
baseline_k``:

* the **mean difference** with a **percentile bootstrap CI** (resampling seeds with
  replacement, ``resamples`` times, from a fixed generator seed so reports reproduce);
* a **bootstrap p-value**, ``2 min(P*(d <= 0), P*(d >= 0))``, the smallest two-sided level
  whose percentile interval still holds zero;
* the **paired t-test** p-value (scipy), because at five seeds the percentile bootstrap can
  only draw 126 distinct resamples and its interval is too narrow (it under-covers for small
  n); a verdict needs both tests, so it is never more permissive than either;
* **Holm's step-down correction** across the baselines a candidate is compared with (one
  family per candidate), applied to both p-values. The reported interval is at the level
  Holm gives that comparison's rank, ``1 - alpha / (m - rank + 1)``; the plain 95 %
  interval is kept beside it.

Verdict: ``better`` when both Holm-adjusted p-values are below ``alpha`` and the mean
difference is positive, ``worse`` when they are and it is negative, otherwise ``not
distinguishable`` (also with fewer than two paired seeds: no test is possible).

Written with numpy and scipy rather than ``scipy.stats.bootstrap`` because the p-value, the
per-rank Holm levels and one shared set of resampled indices per comparison are needed
together; the tests check the interval against scipy's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Verdict = Literal["better", "not distinguishable", "worse"]
BETTER: Verdict = "better"
WORSE: Verdict = "worse"
NOT_DISTINGUISHABLE: Verdict = "not distinguishable"

DEFAULT_ALPHA = 0.05
DEFAULT_RESAMPLES = 10_000


@dataclass(frozen=True)
class ArmScores:
    """One arm's score per seed.

    Attributes:
        name: the arm (``trial #6``, ``lora-r8-qv``).
        scores: seed -> the primary dev metric of that seed's run.
    """

    name: str
    scores: Mapping[int, float]

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.scores.values())))

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (ddof 1); None below two seeds."""
        values = list(self.scores.values())
        return float(np.std(values, ddof=1)) if len(values) > 1 else None


@dataclass(frozen=True)
class PairedComparison:
    """A candidate against one baseline over their shared seeds.

    Attributes:
        candidate: the candidate arm's name.
        baseline: the baseline arm's name.
        seeds: the seeds both arms have, ascending.
        differences: candidate minus baseline, per seed.
        mean_difference: their mean.
        ci95: the 95 % percentile bootstrap interval of the mean difference.
        ci_holm: the interval at Holm's level for this comparison's rank (``ci_level``).
        ci_level: that level.
        p_bootstrap: the two-sided bootstrap p-value, uncorrected.
        p_bootstrap_holm: the same, Holm-adjusted across the candidate's baselines.
        p_t: the paired t-test's two-sided p-value, uncorrected.
        p_t_holm: the same, Holm-adjusted.
        verdict: better, not distinguishable or worse (module docstring).
    """

    candidate: str
    baseline: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean_difference: float
    ci95: tuple[float, float]
    ci_holm: tuple[float, float]
    ci_level: float
    p_bootstrap: float
    p_bootstrap_holm: float
    p_t: float
    p_t_holm: float
    verdict: Verdict


def _resampled_means(differences: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples (seeds drawn with replacement)."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means: np.ndarray = differences[index].mean(axis=1)
    return means


def bootstrap_ci(differences: Sequence[float], level: float = 0.95,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences``.

    Args:
        differences: paired differences (at least one).
        level: coverage, in (0, 1).
        resamples: bootstrap resamples.
        seed: generator seed (same inputs, same interval).

    Returns:
        (low, high).

    Raises:
        ValueError: no differences, or a level outside (0, 1).
    """
    if not differences:
        raise ValueError("bootstrap_ci needs at least one difference")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    means = _resampled_means(np.asarray(differences, dtype=float), resamples, seed)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def bootstrap_p_value(differences: Sequence[float], resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> float:
    """Two-sided bootstrap p-value of "the mean difference is zero".

    ``2 min(P*(mean <= 0), P*(mean >= 0))`` over the resampled means, at most 1: the
    smallest ``1 - level`` whose percentile interval (same resamples) reaches zero.

    Raises:
        ValueError: no differences.
    """
    if not differences:
        raise ValueError("bootstrap_p_value needs at least one difference")
    means = _resampled_means(np.asarray(differences, dtype=float), resamples, seed)
    below, above = float(np.mean(means <= 0)), float(np.mean(means >= 0))
    return min(1.0, 2 * min(below, above))


def paired_t_p_value(differences: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (one-sample t on the differences).

    Identical differences have no spread: p is 1 when they are all zero, else 0 (every
    seed moved the same way by the same amount). One difference cannot be tested: 1.
    """
    values = np.asarray(differences, dtype=float)
    if len(values) < 2:
        return 1.0
    if np.allclose(values, values[0], rtol=0, atol=1e-15):
        return 1.0 if abs(values[0]) <= 1e-15 else 0.0
    return float(stats.ttest_1samp(values, 0.0).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    The i-th smallest p (i from 0) becomes ``max_{j <= i} min(1, (m - j) p_(j))``, so a
    hypothesis is rejected at level alpha exactly when Holm's procedure rejects it.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm_levels(p_values: Sequence[float], alpha: float = DEFAULT_ALPHA) -> list[float]:
    """The confidence level Holm gives each comparison: ``1 - alpha / (m - rank)``, rank
    from 0 in ascending p order (the smallest p is held to the strictest level)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels = [0.0] * m
    for rank, i in enumerate(order):
        levels[i] = 1 - alpha / (m - rank)
    return levels


def verdict(mean_difference: float, p_adjusted: Sequence[float],
            alpha: float = DEFAULT_ALPHA) -> Verdict:
    """``better``/``worse`` when every adjusted p is below ``alpha`` (by the sign of the
    mean difference), else ``not distinguishable``."""
    if all(p < alpha for p in p_adjusted) and mean_difference != 0:
        return BETTER if mean_difference > 0 else WORSE
    return NOT_DISTINGUISHABLE


def compare_candidate(candidate: ArmScores, baselines: Sequence[ArmScores], *,
                      alpha: float = DEFAULT_ALPHA, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> list[PairedComparison]:
    """A candidate against each baseline, Holm-corrected across the baselines.

    Only seeds both arms have are paired; a pair with fewer than two shared seeds is
    reported ``not distinguishable`` with p-values of 1.

    Args:
        candidate: the candidate's scores.
        baselines: the baselines' scores (one Holm family).
        alpha: family-wise error rate of the verdicts.
        resamples: bootstrap resamples per comparison.
        seed: bootstrap generator seed.

    Returns:
        One comparison per baseline, in the order given.

    Raises:
        ValueError: alpha outside (0, 1) or fewer than 100 resamples.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, got {resamples}")
    paired = []
    for baseline in baselines:
        seeds = tuple(sorted(set(candidate.scores) & set(baseline.scores)))
        diffs = tuple(candidate.scores[s] - baseline.scores[s] for s in seeds)
        paired.append((baseline, seeds, diffs))
    p_boot = [bootstrap_p_value(d, resamples, seed) if len(d) >= 2 else 1.0
              for _, _, d in paired]
    p_t = [paired_t_p_value(d) for _, _, d in paired]
    boot_holm, t_holm = holm(p_boot), holm(p_t)
    levels = holm_levels(p_boot, alpha)
    out = []
    for i, (baseline, seeds, diffs) in enumerate(paired):
        mean = float(np.mean(diffs)) if diffs else math.nan
        if len(diffs) >= 2:
            ci95 = bootstrap_ci(diffs, 0.95, resamples, seed)
            ci_holm = bootstrap_ci(diffs, levels[i], resamples, seed)
            call = verdict(mean, (boot_holm[i], t_holm[i]), alpha)
        else:
            ci95 = ci_holm = (math.nan, math.nan)
            call = NOT_DISTINGUISHABLE
        out.append(PairedComparison(
            candidate=candidate.name, baseline=baseline.name, seeds=seeds, differences=diffs,
            mean_difference=mean, ci95=ci95, ci_holm=ci_holm, ci_level=levels[i],
            p_bootstrap=p_boot[i], p_bootstrap_holm=boot_holm[i], p_t=p_t[i],
            p_t_holm=t_holm[i], verdict=call))
    return out
