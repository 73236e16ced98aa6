"""The paired-comparison statistics against scipy and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from autopeft_service.domain.comparison import (
    ArmScores,
    bootstrap_ci,
    bootstrap_p_value,
    compare_candidate,
    holm,
    holm_levels,
    paired_t_p_value,
)


def test_bootstrap_interval_matches_scipys_percentile_bootstrap() -> None:
    differences = [0.012, -0.004, 0.021, 0.008, 0.015, 0.003, 0.010, -0.001]
    ours = bootstrap_ci(differences, 0.95, resamples=100_000, seed=1)
    theirs = stats.bootstrap((np.asarray(differences),), np.mean, confidence_level=0.95,
                             n_resamples=100_000, method="percentile",
                             random_state=np.random.default_rng(7)).confidence_interval
    assert ours[0] == pytest.approx(theirs.low, abs=4e-4)
    assert ours[1] == pytest.approx(theirs.high, abs=4e-4)
    assert ours[0] < np.mean(differences) < ours[1]


def test_bootstrap_interval_is_reproducible_and_widens_with_the_level() -> None:
    differences = [0.5, 1.0, -0.2, 0.7, 0.3]
    assert bootstrap_ci(differences, seed=3) == bootstrap_ci(differences, seed=3)
    low95, high95 = bootstrap_ci(differences, 0.95)
    low99, high99 = bootstrap_ci(differences, 0.99)
    assert low99 <= low95 and high99 >= high95


def test_bootstrap_p_value_by_hand() -> None:
    """All differences positive: no resample has a mean <= 0, so p is 0; symmetric
    differences around zero: about half the resampled means fall each side, so p ~ 1."""
    assert bootstrap_p_value([0.1, 0.2, 0.3, 0.4, 0.5]) == 0.0
    assert bootstrap_p_value([-1.0, 1.0, -2.0, 2.0], resamples=20_000) > 0.8
    # (-1.0, 0.1, 0.1, 0.1, 0.1): a resample's mean is >= 0 exactly when it never draws
    # the -1.0 (one draw already gives (-1 + 4 x 0.1) / 5 < 0), which has probability
    # (4/5)^5 = 0.32768; the mean is <= 0 otherwise, so p = 2 x 0.32768 = 0.655
    assert bootstrap_p_value([-1.0, 0.1, 0.1, 0.1, 0.1], 100_000, 0) == pytest.approx(
        2 * 0.8**5, abs=0.01)


def test_paired_t_matches_scipy() -> None:
    a = [0.80, 0.82, 0.79, 0.85, 0.81]
    b = [0.78, 0.80, 0.80, 0.81, 0.79]
    differences = [x - y for x, y in zip(a, b, strict=True)]
    assert paired_t_p_value(differences) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_t_p_value([0.0, 0.0, 0.0]) == 1.0
    assert paired_t_p_value([0.01, 0.01, 0.01]) == 0.0
    assert paired_t_p_value([0.5]) == 1.0


def test_holm_by_hand() -> None:
    """p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03;
    0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> max(0.06, 0.04) = 0.06 (monotone)."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == [0.02]
    # levels: the smallest p is held to 1 - 0.05/4, the largest to 1 - 0.05/1
    assert holm_levels([0.01, 0.04, 0.03, 0.005]) == pytest.approx(
        [1 - 0.05 / 3, 1 - 0.05 / 1, 1 - 0.05 / 2, 1 - 0.05 / 4])


def _arm(name: str, values: list[float]) -> ArmScores:
    return ArmScores(name, dict(enumerate(values)))


def test_verdicts_follow_the_evidence() -> None:
    candidate = _arm("cand", [0.85, 0.86, 0.84, 0.87, 0.85])
    clearly_worse = _arm("weak", [0.75, 0.77, 0.74, 0.76, 0.75])      # ~10 points below
    clearly_better = _arm("strong", [0.95, 0.96, 0.94, 0.97, 0.96])
    noisy = _arm("noisy", [0.95, 0.75, 0.90, 0.80, 0.85])              # same mean, big spread
    out = compare_candidate(candidate, [clearly_worse, clearly_better, noisy])
    verdicts = {c.baseline: c.verdict for c in out}
    assert verdicts == {"weak": "better", "strong": "worse", "noisy": "not distinguishable"}
    weak = out[0]
    assert weak.mean_difference == pytest.approx(0.10, abs=1e-9)
    assert weak.ci95[0] > 0 and weak.ci_holm[0] > 0
    assert weak.p_t_holm >= weak.p_t and weak.p_bootstrap_holm >= weak.p_bootstrap


def test_holm_turns_a_marginal_win_into_not_distinguishable() -> None:
    """A difference significant alone (paired t p ~ 0.03) is not once three baselines
    share the family: Holm multiplies the smallest p by 3."""
    candidate = _arm("cand", [0.80, 0.81, 0.80, 0.82, 0.80])
    marginal = _arm("marginal", [0.79, 0.80, 0.80, 0.80, 0.79])
    alone = compare_candidate(candidate, [marginal])[0]
    assert alone.p_t < 0.05
    unrelated = [_arm(f"u{i}", [0.80, 0.81, 0.80, 0.82, 0.80]) for i in range(2)]
    family = compare_candidate(candidate, [marginal, *unrelated])[0]
    assert family.p_t_holm == pytest.approx(min(1.0, 3 * family.p_t))
    assert family.verdict == "not distinguishable"


def test_pairs_use_shared_seeds_only_and_one_seed_gives_no_verdict() -> None:
    candidate = ArmScores("cand", {0: 0.9, 1: 0.91, 2: 0.92})
    baseline = ArmScores("base", {1: 0.5, 2: 0.5, 3: 0.5})
    comparison = compare_candidate(candidate, [baseline])[0]
    assert comparison.seeds == (1, 2)
    assert comparison.differences == pytest.approx((0.41, 0.42))
    single = compare_candidate(ArmScores("c", {0: 0.9}), [ArmScores("b", {0: 0.1})])[0]
    assert single.verdict == "not distinguishable" and math.isnan(single.ci95[0])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        compare_candidate(_arm("c", [1.0, 2.0]), [_arm("b", [1.0, 2.0])], alpha=1.5)
    with pytest.raises(ValueError, match="resamples"):
        compare_candidate(_arm("c", [1.0, 2.0]), [_arm("b", [1.0, 2.0])], resamples=5)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0], level=1.0)
