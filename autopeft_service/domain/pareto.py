"""Pareto front and hypervolume for the two objectives: score (maximise), share (minimise).

Written by hand rather than taken from BoTorch: the domain layer stays free of torch, and
in two dimensions both are a sort and a sweep (O(n log n)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectivePoint:
    """One evaluated configuration in objective space.

    Attributes:
        score: task score on the held-out split (higher is better).
        share: trainable parameters in percent of the backbone (lower is better).
    """

    score: float
    share: float


def dominates(a: ObjectivePoint, b: ObjectivePoint) -> bool:
    """True when ``a`` is at least as good as ``b`` in both objectives and better in one."""
    return (a.score >= b.score and a.share <= b.share) and (a.score > b.score or a.share < b.share)


def pareto_indices(points: Sequence[ObjectivePoint]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a front point are all kept).

    Returns:
        Indices sorted by increasing share (then decreasing score).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i].share, -points[i].score))
    front: list[int] = []
    best_score = float("-inf")
    best_share = float("nan")
    for i in order:
        p = points[i]
        if p.score > best_score:
            front.append(i)
            best_score, best_share = p.score, p.share
        elif p.score == best_score and p.share == best_share:
            front.append(i)  # an exact duplicate of a front point is not dominated
    return front


def hypervolume(points: Sequence[ObjectivePoint], reference: ObjectivePoint) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (score floor, share ceiling).

    Points that do not strictly improve on the reference in both objectives add nothing.
    Along the front (increasing share, increasing score) the best score reachable at share
    x is that of the last front point with share <= x, so the area is a sum of rectangles.
    """
    useful = [p for p in points if p.score > reference.score and p.share < reference.share]
    front = [useful[i] for i in pareto_indices(useful)]
    area = 0.0
    for index, point in enumerate(front):
        next_share = front[index + 1].share if index + 1 < len(front) else reference.share
        area += (next_share - point.share) * (point.score - reference.score)
    return area


def hypervolume_history(points: Sequence[ObjectivePoint], reference: ObjectivePoint
                        ) -> list[float]:
    """``hypervolume(points[:k + 1], reference)`` for every k, in one pass.

    Keeps the running front (a point weakly dominated by it changes nothing; a new front
    point evicts those it dominates), so the cost is the number of points times the front's
    size instead of recomputing the front of every prefix.

    Returns:
        One hypervolume per point, non-decreasing.
    """
    front: list[ObjectivePoint] = []
    volume = 0.0
    history = []
    for point in points:
        useful = point.score > reference.score and point.share < reference.share
        covered = any(f.score >= point.score and f.share <= point.share for f in front)
        if useful and not covered:
            front = [f for f in front if not (point.score >= f.score and point.share <= f.share)]
            front.append(point)
            volume = hypervolume(front, reference)
        history.append(volume)
    return history
