"""Pareto front and hypervolume against brute force."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopeft_service.domain.pareto import (
    ObjectivePoint,
    dominates,
    hypervolume,
    hypervolume_history,
    pareto_indices,
)

points = st.lists(st.builds(ObjectivePoint, score=st.sampled_from([0.1 * i for i in range(11)]),
                            share=st.sampled_from([0.5 * i for i in range(9)])), max_size=25)


@settings(max_examples=300, deadline=None)
@given(points)
def test_pareto_equals_brute_force_non_dominated_filter(pts: list[ObjectivePoint]) -> None:
    brute = {i for i, p in enumerate(pts) if not any(dominates(q, p) for q in pts)}
    assert set(pareto_indices(pts)) == brute


@settings(max_examples=200, deadline=None)
@given(points)
def test_hypervolume_equals_grid_count(pts: list[ObjectivePoint]) -> None:
    """On a 0.05 grid (finer than the points') the dominated cells are counted exactly."""
    reference = ObjectivePoint(score=0.0, share=4.0)
    cells = 0
    for i, j in itertools.product(range(20), range(80)):
        score, share = 0.05 * i + 0.025, 0.05 * j + 0.025  # cell centres
        if any(p.score >= score and p.share <= share for p in pts
               if p.score > reference.score and p.share < reference.share):
            cells += 1
    assert hypervolume(pts, reference) == pytest.approx(cells * 0.05 * 0.05, abs=1e-9)


def test_hypervolume_by_hand() -> None:
    front = [ObjectivePoint(0.5, 1.0), ObjectivePoint(0.8, 3.0), ObjectivePoint(0.6, 3.5)]
    # rectangles: share 1..3 at height 0.5, share 3..10 at height 0.8
    assert hypervolume(front, ObjectivePoint(0.0, 10.0)) == pytest.approx(2 * 0.5 + 7 * 0.8)
    assert hypervolume([ObjectivePoint(0.9, 11.0)], ObjectivePoint(0.0, 10.0)) == 0.0


@settings(max_examples=300, deadline=None)
@given(points)
def test_hypervolume_history_equals_the_hypervolume_of_every_prefix(
        pts: list[ObjectivePoint]) -> None:
    """Duplicates, points dominated later, points outside the reference: each prefix."""
    reference = ObjectivePoint(score=0.2, share=3.0)
    history = hypervolume_history(pts, reference)
    assert len(history) == len(pts)
    for k, volume in enumerate(history):
        assert volume == pytest.approx(hypervolume(pts[:k + 1], reference), abs=1e-12)
