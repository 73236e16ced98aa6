"""Task metrics (GLUE's): accuracy, F1, Matthews correlation, Pearson and Spearman correlation.

All values are fractions (0.815, not 81.5). Correlations that are undefined because the
predictions or the labels are constant are reported as 0.0 (no linear/rank association),
so a degenerate model scores badly instead of crashing the trial. F1 is binary with class 1
as the positive class and is 0.0 when nothing is predicted positive.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

__all__ = ["METRICS", "compute_metrics"]


def _accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(accuracy_score(gold, pred))


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(f1_score(gold, pred, pos_label=1, average="binary", zero_division=0.0))


def _matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    if np.unique(pred).size < 2 or np.unique(gold).size < 2:
        return 0.0
    return float(matthews_corrcoef(gold, pred))


def _correlation(fn: Callable[..., Any]) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(pred: np.ndarray, gold: np.ndarray) -> float:
        pred = pred.astype(np.float64)
        gold = gold.astype(np.float64)
        if pred.size < 2 or np.ptp(pred) == 0.0 or np.ptp(gold) == 0.0:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(fn(pred, gold)[0])
        return 0.0 if np.isnan(value) else value

    return metric


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews": _matthews,
    "pearson": _correlation(stats.pearsonr),
    "spearman": _correlation(stats.spearmanr),
}
"""Metric name -> function(predictions, labels) returning a float."""

_CLASS_METRICS = frozenset({"accuracy", "f1", "matthews"})


def _as_array(values: Any, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise ValueError(f"{what}: expected numbers, got objects")
    return array


def compute_metrics(
    metrics: Sequence[str], predictions: Any, labels: Any
) -> dict[str, float]:
    """Compute the named metrics of predictions against labels.

    Args:
        metrics: Metric names, each one of ``accuracy``, ``f1``, ``matthews``, ``pearson``,
            ``spearman``.
        predictions: Shape ``(N,)`` predicted class indices (classification) or values
            (regression); or ``(N, C)`` scores/logits, reduced by argmax for ``C > 1`` and
            squeezed for ``C == 1``. A list, NumPy array or torch tensor.
        labels: Shape ``(N,)`` gold class indices or values.

    Returns:
        ``{name: value}`` in the order of ``metrics``, values as fractions.

    Raises:
        ValueError: On an unknown metric name, mismatched or empty inputs, non-finite
            values, or non-integer predictions for a classification metric.
    """
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {unknown}; known metrics: {', '.join(sorted(METRICS))}"
        )
    pred = _as_array(predictions, "predictions")
    gold = _as_array(labels, "labels")
    if pred.ndim == 2:
        pred = pred[:, 0] if pred.shape[1] == 1 else pred.argmax(axis=1)
    if pred.ndim != 1 or gold.ndim != 1:
        raise ValueError(
            f"predictions and labels must be 1-D (or (N, C) scores), got shapes "
            f"{pred.shape} and {gold.shape}"
        )
    if pred.shape[0] != gold.shape[0]:
        raise ValueError(f"{pred.shape[0]} predictions but {gold.shape[0]} labels")
    if pred.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero examples")
    for what, array in (("predictions", pred), ("labels", gold)):
        if not np.all(np.isfinite(array.astype(np.float64))):
            raise ValueError(f"{what} contain NaN or infinite values")
    class_pred, class_gold = pred, gold
    if any(name in _CLASS_METRICS for name in metrics):
        for what, array in (("predictions", pred), ("labels", gold)):
            if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
                raise ValueError(
                    f"{what}: classification metrics need class indices, got fractional values"
                )
        class_pred, class_gold = pred.astype(np.int64), gold.astype(np.int64)
    return {
        name: METRICS[name](class_pred, class_gold) if name in _CLASS_METRICS
        else METRICS[name](pred, gold)
        for name in metrics
    }
