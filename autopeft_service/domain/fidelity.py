"""A study's fidelity axis: trials train to a fraction of the full budget, pause, and the
promising ones continue from their checkpoint (freeze-thaw).

A study with a ``fidelity`` section proposes every new configuration at the lowest level.
A trial that reaches a level below 1 reports its score there, uploads a checkpoint (the
adapter, the head, the optimiser and scheduler state, the RNG state and the data position:
``workers.checkpoint``) and **pauses**. The proposer then decides which paused trials
continue to the next level (``rule``); a continued trial is leased again, by any worker,
which resumes from the checkpoint, so only the new steps cost compute. At level 1 the
trial completes as a trial of a study without fidelity does.

Rules:

* ``asha`` (model-free; the baseline): a trial paused at level i continues when it ranks
  among the best ``1 / eta`` of the trials that reached level i, by the two objectives
  (non-dominated sorting, then crowding distance: ``domain.early_stopping``'s ranking), as
  asynchronous successive halving promotes. The first trial at a level always continues.
* ``model``: one GP of the score over configuration and level, fitted to every
  observation, values each possible action (continue a paused trial to its next level, or
  start a new configuration at the lowest) by its expected hypervolume improvement at full
  training per unit of compute, and takes the best (``optimizers.multi_fidelity``).

The budget counts **full-training equivalents**: a trial that reached (or is leased to
reach) level f uses f of one trial, so ``budget.total_trials`` is compute, and a fidelity
study may start more configurations than that number.

Pure Python (pydantic only), like the rest of the domain layer.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator

from autopeft_service.domain.validation import FieldError

#: Most levels a study may name.
MAX_LEVELS = 8
FidelityRule = Literal["asha", "model"]


class Fidelity(BaseModel):
    """A study's ``fidelity`` section (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    levels: tuple[Annotated[StrictFloat, Field(gt=0, le=1)], ...] = Field(
        (1 / 9, 1 / 3, 1.0), min_length=2, max_length=MAX_LEVELS,
        description="Fractions of the full training budget (steps) at which a trial pauses "
        "and may continue: strictly increasing, in (0, 1], the last exactly 1.")
    rule: FidelityRule = Field(
        "asha", description="Which paused trials continue and what starts: asha (the best "
        "1/eta at their level, model-free) or model (a multi-fidelity GP's expected "
        "hypervolume improvement per unit of compute).")
    eta: StrictFloat = Field(3.0, ge=1.5, le=100,
                             description="asha: about 1/eta of a level's trials continue.")

    @model_validator(mode="after")
    def _levels_valid(self) -> Self:
        for index, level in enumerate(self.levels):
            if index and level <= self.levels[index - 1]:
                raise FieldError(f"fidelity.levels.{index}",
                                 f"{level!r} must exceed the level before it "
                                 f"({self.levels[index - 1]!r}): levels strictly increase")
        if self.levels[-1] != 1.0:
            raise FieldError(f"fidelity.levels.{len(self.levels) - 1}",
                             f"the last level must be 1 (full training), got {self.levels[-1]!r}")
        return self

    def next_level(self, level: float) -> float | None:
        """The level after ``level``, or None at full training."""
        later = [v for v in self.levels if v > level + 1e-12]
        return later[0] if later else None

    def level_index(self, level: float) -> int:
        """The index of ``level`` among the levels.

        Raises:
            ValueError: not one of them.
        """
        for index, value in enumerate(self.levels):
            if abs(value - level) <= 1e-9:
                return index
        raise ValueError(f"{level} is not a fidelity level of {self.levels}")
