"""Multi-objective early stopping: rungs, and the asynchronous MO-ASHA rule.

A study's ``early_stopping`` section names rungs (fractions of each trial's training
steps). At every rung a worker scores a fixed subset of the held-out split and sends the
score with its heartbeat; the server decides at once, from the rung scores recorded so far,
whether the trial goes on (Schmucker et al., 2021, "Multi-objective multi-fidelity
hyperparameter optimization with application to fairness"; asynchronous successive halving
as in Li et al., 2020).

The rule, for a trial reaching rung r (``moasha_decision``):

1. The entries are every trial of the study that reached rung r, this one included: its
   rung score (maximised) and its parameter share (minimised; known before training).
2. They are ranked by non-dominated sorting (front 1 = not dominated by any entry, front
   2 = not dominated once front 1 is removed, ...), and within a front by NSGA-II crowding
   distance, largest first (a front's two ends have an infinite distance, so the trials of
   lowest share and highest score at the rung always rank first). The priority of an entry
   is ``(front, -crowding distance)``.
3. With n entries, ``keep = max(1, floor(n / eta))``. The trial continues when its priority
   is at most the keep-th best priority: the documented tie-break is that a trial tied with
   the last kept one continues too. Nothing waits for a rung to fill: the first trial at a
   rung always continues (as Optuna's successive-halving pruner promotes the best of fewer
   than eta trials).

Written by hand: Optuna's pruners refuse multi-objective studies and Ax's early-stopping
strategies watch one metric; the domain layer stays free of torch and numpy. In two
objectives the sort is a sweep over points ordered by share.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

from autopeft_service.domain.validation import FieldError

#: Most rungs a study may name (each costs one evaluation of ``rung_examples``).
MAX_RUNGS = 8
#: Most held-out examples a rung may score.
MAX_RUNG_EXAMPLES = 100_000

EarlyStoppingRule = Literal["none", "moasha"]


class EarlyStopping(BaseModel):
    """A study's early-stopping section.

    ``rule: none`` with rungs records learning curves without stopping anything (the
    evidence a user needs before turning the rule on); ``moasha`` stops trials at rungs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    rule: EarlyStoppingRule = Field("none", description="none (default) or moasha.")
    rungs: tuple[Annotated[StrictFloat, Field(gt=0, lt=1)], ...] = Field(
        (), max_length=MAX_RUNGS, description="Fractions of each trial's training steps at "
        "which it is scored, strictly increasing, each in (0, 1). With rule moasha and none "
        "given: one rung at 1/eta (measured: earlier rungs predict the end poorly).")
    eta: StrictFloat = Field(3.0, ge=1.5, le=100, description="Reduction factor: at each rung about "
                       "1/eta of the trials that reached it go on.")
    rung_examples: StrictInt = Field(
        500, ge=1, le=MAX_RUNG_EXAMPLES, description="Held-out examples scored at a rung (the "
        "first ones of the held-out split, the same for every trial): caps the cost of rung "
        "evaluation.")

    @model_validator(mode="after")
    def _rungs_valid(self) -> Self:
        for index, fraction in enumerate(self.rungs):
            if not 0 < fraction < 1:
                raise FieldError(f"early_stopping.rungs.{index}",
                                 f"must be a fraction in (0, 1), got {fraction!r}")
            if index and fraction <= self.rungs[index - 1]:
                raise FieldError(f"early_stopping.rungs.{index}",
                                 f"{fraction!r} must exceed the rung before it "
                                 f"({self.rungs[index - 1]!r}): rungs strictly increase")
        if self.rule == "moasha" and not self.rungs:
            # One rung at 1/eta, not ASHA's geometric ladder (1/eta^2, 1/eta): on the SST-2
            # learning curves a rung at 1/9 of training correlates 0.24 with the end (1/3:
            # 0.68), and stopping there cost more hypervolume for the compute it saved
            # (docs/benchmarks.md, "Multi-objective early stopping").
            object.__setattr__(self, "rungs", (1 / self.eta,))
        return self

    @property
    def stops(self) -> bool:
        """True when the rule can stop trials."""
        return self.rule != "none" and bool(self.rungs)


def rung_steps(rungs: Sequence[float], total_steps: int) -> list[int]:
    """The training step at which each rung is scored: ``ceil(fraction * total_steps)``,
    at least 1. A rung that would fall on the last step (or after it) gets 0: it is never
    scored, because the trial's final score comes at that step anyway."""
    steps = []
    for fraction in rungs:
        step = max(1, math.ceil(fraction * total_steps))
        steps.append(step if step < total_steps else 0)
    return steps


@dataclass(frozen=True)
class RungEntry:
    """One trial at one rung, as the rule sees it.

    Attributes:
        key: the trial (any hashable; the server uses trial ids).
        score: the rung score (maximised).
        share: the trial's parameter share (minimised).
    """

    key: Hashable
    score: float
    share: float


@dataclass(frozen=True)
class RungDecision:
    """The rule's answer for one trial at one rung.

    Attributes:
        proceed: True when the trial goes on.
        position: the trial's 1-based place among the entries ranked by priority (the
            first of tied entries).
        keep: how many entries the rung keeps (``max(1, floor(n / eta))``).
        entries: how many trials reached the rung, the candidate included.
        front: the candidate's non-dominated front (1 = not dominated).
    """

    proceed: bool
    position: int
    keep: int
    entries: int
    front: int

    def describe(self, rung: int, fraction: float) -> str:
        """One line for the trial's reason and the logs."""
        verb = "continues" if self.proceed else "pruned"
        return (f"{verb} at rung {rung} ({fraction:.0%} of training): front {self.front}, "
                f"place {self.position} of {self.entries} by (score, share), the rung keeps "
                f"{self.keep}")


def _dominates(a: RungEntry, b: RungEntry) -> bool:
    return a.score >= b.score and a.share <= b.share and (a.score > b.score or a.share < b.share)


def nondominated_fronts(entries: Sequence[RungEntry]) -> list[int]:
    """The 1-based non-dominated front of every entry (score maximised, share minimised).

    A sweep in order of increasing share (then decreasing score): each entry joins the
    first front none of whose members so far dominates it. In two objectives only a
    front's latest member can dominate a later entry (its members' scores increase with
    their share), so one comparison per front decides. Exact duplicates share a front.
    """
    order = sorted(range(len(entries)), key=lambda i: (entries[i].share, -entries[i].score))
    latest: list[RungEntry] = []  # the last member of each front so far
    fronts = [0] * len(entries)
    for index in order:
        entry = entries[index]
        front = 0
        while front < len(latest) and _dominates(latest[front], entry):
            front += 1
        if front == len(latest):
            latest.append(entry)
        else:
            latest[front] = entry
        fronts[index] = front + 1
    return fronts


def crowding_distances(entries: Sequence[RungEntry], members: Sequence[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each member of one front (indices into ``entries``).

    Members are ordered by increasing share, then increasing score, then position in
    ``entries``; the two ends get infinity, the others the sum over both objectives of the
    gap between their neighbours divided by the front's range (a zero range adds 0).
    """
    order = sorted(members, key=lambda i: (entries[i].share, entries[i].score, i))
    distances = {i: 0.0 for i in order}
    if len(order) <= 2:
        return {i: math.inf for i in order}
    distances[order[0]] = distances[order[-1]] = math.inf
    for value in (attrgetter("share"), attrgetter("score")):
        span = value(entries[order[-1]]) - value(entries[order[0]])
        if span == 0:
            continue
        for position in range(1, len(order) - 1):
            gap = value(entries[order[position + 1]]) - value(entries[order[position - 1]])
            distances[order[position]] += abs(gap) / abs(span)
    return distances


def priorities(entries: Sequence[RungEntry]) -> list[tuple[int, float]]:
    """``(front, -crowding distance)`` of every entry: smaller is better."""
    fronts = nondominated_fronts(entries)
    out: list[tuple[int, float]] = [(0, 0.0)] * len(entries)
    for front in set(fronts):
        members = [i for i, f in enumerate(fronts) if f == front]
        for index, distance in crowding_distances(entries, members).items():
            out[index] = (front, -distance)
    return out


def moasha_decision(candidate: Hashable, entries: Sequence[RungEntry],
                    eta: float) -> RungDecision:
    """Whether ``candidate`` goes on past a rung (the module's rule, step 3).

    Args:
        candidate: the key of the trial deciding now; it must be among ``entries``.
        entries: every trial that reached the rung (this one included), one entry each.
        eta: the reduction factor (> 1).

    Returns:
        The decision, with the candidate's place for the record.

    Raises:
        ValueError: ``candidate`` is not among ``entries``, or ``eta`` is not above 1.
    """
    if not eta > 1:
        raise ValueError(f"eta must exceed 1, got {eta!r}")
    index = next((i for i, e in enumerate(entries) if e.key == candidate), None)
    if index is None:
        raise ValueError(f"candidate {candidate!r} is not among the rung's entries")
    ranked = priorities(entries)
    ordered = sorted(ranked)
    keep = max(1, math.floor(len(entries) / eta))
    own = ranked[index]
    return RungDecision(proceed=own <= ordered[keep - 1], position=ordered.index(own) + 1,
                        keep=keep, entries=len(entries), front=own[0])
