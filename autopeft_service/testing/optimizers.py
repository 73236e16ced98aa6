"""Optimisers for tests of the proposer's process pool: slow, failing or dying fits.

Module-level (picklable by name), because the pool's spawned children import them. Which
behaviour a study gets is read from its name, the one field a test sets freely:
``slow-<seconds>`` sleeps that long in a "fit", ``raise`` raises, ``die`` kills its process.
A fit happens once the study has a completed trial (before that: Sobol, in the thread).
"""

from __future__ import annotations

import os
import time

from autopeft_service.domain.study import StudySpec
from autopeft_service.optimizers.base import History, OptimizerError, Suggestion
from autopeft_service.optimizers.sobol import SobolOptimizer


class ScriptedFitOptimizer(SobolOptimizer):
    """Sobol points, behind a "model fit" that sleeps, raises or dies as the name says."""

    name = "scripted-fit"

    def __init__(self, spec: StudySpec) -> None:
        super().__init__(spec.space, seed=spec.optimizer.seed)
        self.behaviour = spec.name

    def needs_model(self, n: int, history: History) -> bool:
        return n > 0 and len(history.completed) > 0

    def suggest(self, n: int, history: History) -> list[Suggestion]:
        if self.needs_model(n, history):
            if self.behaviour.startswith("slow-"):
                time.sleep(float(self.behaviour.removeprefix("slow-")))
            elif self.behaviour == "raise":
                raise OptimizerError("scripted fit failure")
            elif self.behaviour == "die":
                os._exit(3)  # as an out-of-memory kill would end the child
        return super().suggest(n, history)


def scripted_fit_factory(spec: StudySpec) -> ScriptedFitOptimizer:
    """The proposer's ``optimizer_factory`` (and the pool's) for these tests."""
    return ScriptedFitOptimizer(spec)
