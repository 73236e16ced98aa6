"""The MO-ASHA rule against a brute-force reference, and the early-stopping section."""

from __future__ import annotations

import math
import random

import pytest

from autopeft_service.domain.early_stopping import (
    EarlyStopping,
    RungEntry,
    crowding_distances,
    moasha_decision,
    nondominated_fronts,
    rung_steps,
)
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.validation import parse_model


def _dominates(a: RungEntry, b: RungEntry) -> bool:
    return a.score >= b.score and a.share <= b.share and (a.score > b.score or a.share < b.share)


def reference_fronts(entries: list[RungEntry]) -> list[int]:
    """Fronts by definition: peel off the entries no remaining entry dominates."""
    remaining = set(range(len(entries)))
    fronts = [0] * len(entries)
    front = 0
    while remaining:
        front += 1
        layer = {i for i in remaining
                 if not any(_dominates(entries[j], entries[i]) for j in remaining)}
        for i in layer:
            fronts[i] = front
        remaining -= layer
    return fronts


def reference_crowding(entries: list[RungEntry], members: list[int]) -> dict[int, float]:
    """NSGA-II crowding distance by its definition, one objective at a time."""
    distance = {i: 0.0 for i in members}
    if len(members) <= 2:
        return {i: math.inf for i in members}
    for value, other in (("share", "score"), ("score", "share")):
        order = sorted(members, key=lambda i: (getattr(entries[i], value),
                                               getattr(entries[i], other), i))
        low, high = getattr(entries[order[0]], value), getattr(entries[order[-1]], value)
        distance[order[0]] = distance[order[-1]] = math.inf
        for k in range(1, len(order) - 1):
            if high > low:
                distance[order[k]] += (getattr(entries[order[k + 1]], value)
                                       - getattr(entries[order[k - 1]], value)) / (high - low)
    return distance


def reference_decision(candidate: int, entries: list[RungEntry], eta: float) -> bool:
    """Goes on iff fewer than keep entries have a strictly better (front, crowding)."""
    fronts = reference_fronts(entries)
    crowd: dict[int, float] = {}
    for front in set(fronts):
        crowd.update(reference_crowding(entries, [i for i, f in enumerate(fronts) if f == front]))
    priority = [(fronts[i], -crowd[i]) for i in range(len(entries))]
    index = [e.key for e in entries].index(candidate)
    better = sum(1 for p in priority if p < priority[index])
    return better < max(1, math.floor(len(entries) / eta))


def _random_history(rng: random.Random) -> list[RungEntry]:
    n = rng.randint(1, 30)
    coarse = rng.random() < 0.5  # few distinct values: ties and exact duplicates
    entries = []
    for key in range(n):
        score = rng.choice([0.5, 0.6, 0.7, 0.8]) if coarse else rng.random()
        share = rng.choice([0.1, 0.5, 1.0, 2.0]) if coarse else rng.uniform(0, 5)
        entries.append(RungEntry(key=key, score=score, share=share))
    return entries


def test_fronts_crowding_and_decisions_match_the_brute_force_reference() -> None:
    rng = random.Random(0)
    stopped = proceeded = 0
    for _ in range(400):
        entries = _random_history(rng)
        fronts = nondominated_fronts(entries)
        assert fronts == reference_fronts(entries)
        for front in set(fronts):
            members = [i for i, f in enumerate(fronts) if f == front]
            assert crowding_distances(entries, members) == pytest.approx(
                reference_crowding(entries, members))
        eta = rng.choice([2.0, 2.5, 3.0, 4.0])
        for entry in entries:
            decision = moasha_decision(entry.key, entries, eta)
            assert decision.proceed == reference_decision(entry.key, entries, eta)
            assert decision.keep == max(1, math.floor(len(entries) / eta))
            stopped += not decision.proceed
            proceeded += decision.proceed
    assert stopped > 100 and proceeded > 100  # both outcomes were exercised


def test_rule_on_small_rungs() -> None:
    alone = [RungEntry(key="a", score=0.1, share=9.0)]
    assert moasha_decision("a", alone, 3).proceed  # the first at a rung never waits
    dominated = [RungEntry("a", 0.8, 1.0), RungEntry("b", 0.7, 2.0)]
    assert not moasha_decision("b", dominated, 3).proceed
    assert moasha_decision("a", dominated, 3).proceed
    trade_off = [RungEntry("a", 0.8, 2.0), RungEntry("b", 0.7, 1.0)]  # both ends of front 1
    assert all(moasha_decision(k, trade_off, 3).proceed for k in "ab")


def test_the_lowest_share_and_the_best_score_always_go_on() -> None:
    rng = random.Random(1)
    for _ in range(100):
        entries = [RungEntry(key=k, score=rng.random(), share=rng.uniform(0, 5))
                   for k in range(rng.randint(3, 40))]
        cheapest = min(entries, key=lambda e: e.share)
        best = max(entries, key=lambda e: e.score)
        assert moasha_decision(cheapest.key, entries, 4).proceed
        assert moasha_decision(best.key, entries, 4).proceed


def test_decision_refuses_an_unknown_candidate_and_a_bad_eta() -> None:
    entries = [RungEntry("a", 0.5, 1.0)]
    with pytest.raises(ValueError, match="not among"):
        moasha_decision("b", entries, 3)
    with pytest.raises(ValueError, match="eta"):
        moasha_decision("a", entries, 1)


def test_section_defaults_and_validation() -> None:
    assert not EarlyStopping().stops
    moasha = EarlyStopping(rule="moasha", eta=3)
    assert moasha.rungs == pytest.approx((1 / 3,)) and moasha.stops
    assert EarlyStopping(rule="moasha", eta=4).rungs == pytest.approx((0.25,))
    assert EarlyStopping(rule="none", rungs=(0.5,)).rungs == (0.5,)
    # a fraction outside (0, 1) is refused by the type (at rungs.N of the section), an
    # order that does not increase by the section's check (at early_stopping.rungs.N)
    for rungs, field in (((0.5, 0.4), "early_stopping.rungs.1"),
                         ((0.0,), "rungs.0: Input should be greater than 0"),
                         ((1.0,), "rungs.0: Input should be less than 1")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            parse_model(EarlyStopping, {"rule": "moasha", "rungs": list(rungs)})
    with pytest.raises(ConfigError, match="eta"):
        parse_model(EarlyStopping, {"rule": "moasha", "eta": 1.0})


def test_rung_steps() -> None:
    assert rung_steps((1 / 9, 1 / 3), 90) == [10, 30]
    assert rung_steps((0.01,), 10) == [1]  # at least one step
    assert rung_steps((0.95,), 10) == [0]  # would fall on the last step: never scored
