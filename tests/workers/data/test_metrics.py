"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.data.metrics import compute_metrics

# TP = 2 (rows 0, 3), FP = 2 (rows 2, 5), FN = 0, TN = 2 (rows 1, 4).
PRED = [1, 0, 1, 1, 0, 1]
GOLD = [1, 0, 0, 1, 0, 0]


def test_classification_metrics_by_hand() -> None:
    values = compute_metrics(["accuracy", "f1", "matthews"], PRED, GOLD)
    assert list(values) == ["accuracy", "f1", "matthews"]
    assert values["accuracy"] == pytest.approx(4 / 6)
    # precision 2/4, recall 2/2 -> F1 = 2 * 0.5 * 1 / 1.5
    assert values["f1"] == pytest.approx(2 / 3)
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 4 / sqrt(4*2*4*2)
    assert values["matthews"] == pytest.approx(0.5)


def test_f1_uses_class_1_as_positive() -> None:
    # Class 1 positive: TP=1, FP=1, FN=0 -> F1 = 2/3. (Class 0 positive would give 6/7.)
    assert compute_metrics(["f1"], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0])["f1"] == pytest.approx(2 / 3)


def test_correlations_by_hand() -> None:
    pred = [1.0, 2.0, 3.0, 4.0]
    # deviations (-1.5,-.5,.5,1.5) and (-3.25,-1.25,.75,3.75): r = 11.5 / sqrt(5 * 26.75)
    values = compute_metrics(["pearson", "spearman"], pred, [2.0, 4.0, 6.0, 9.0])
    assert values["pearson"] == pytest.approx(11.5 / math.sqrt(5 * 26.75))
    assert values["spearman"] == pytest.approx(1.0)
    # rank differences (0, 1, -1, 0): rho = 1 - 6 * 2 / (4 * 15)
    assert compute_metrics(["spearman"], pred, [1, 3, 2, 4])["spearman"] == pytest.approx(0.8)


def test_constant_predictions_score_zero_instead_of_crashing() -> None:
    values = compute_metrics(["pearson", "spearman"], [2.5] * 4, [1.0, 2.0, 3.0, 4.0])
    assert values == {"pearson": 0.0, "spearman": 0.0}
    values = compute_metrics(["accuracy", "f1", "matthews"], [0, 0, 0, 0], [0, 1, 0, 1])
    assert values == {"accuracy": 0.5, "f1": 0.0, "matthews": 0.0}


def test_logits_tensors_and_arrays_are_accepted() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.1, 0.9], [0.0, 3.0]], requires_grad=True)
    assert compute_metrics(["accuracy"], logits, torch.tensor([0, 1, 0]))["accuracy"] == (
        pytest.approx(2 / 3)
    )
    column = np.array([[1.0], [2.0], [3.5]])
    assert compute_metrics(["pearson"], column, [1, 2, 3])["pearson"] > 0.98
    assert compute_metrics(["accuracy"], np.array([1.0, 0.0]), [1, 0])["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("metrics", "pred", "gold", "message"),
    [
        (["bleu"], [1], [1], "unknown metric"),
        (["accuracy"], [1, 0], [1], "2 predictions but 1 labels"),
        (["accuracy"], [], [], "zero examples"),
        (["pearson"], [float("nan"), 1.0], [1.0, 2.0], "NaN"),
        (["accuracy"], [0.5, 1.0], [1, 0], "fractional"),
    ],
)
def test_bad_inputs_raise_value_error(metrics, pred, gold, message) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(metrics, pred, gold)
