"""Warm start (issue 32): a new study learns from earlier studies of the same search-space
family, on another task or another backbone.

``warm_start: {"from_studies": [ID, ...], "mode": "model" | "seed"}`` in the study spec:

* ``seed``: the earlier studies' observed Pareto configurations, mapped to this study's
  space (``SearchSpaceBase.transfer_point``: by relative layer position for a backbone of
  another depth), are queued as this study's first trials (generator
  ``transfer:<study>#<trial number>``), before any proposal of its own;
* ``model``: the earlier studies' completed trials, mapped the same way, enter the
  ``saasbo`` optimiser's model as other tasks (read from the database at proposal time,
  never copied): a multi-task SAAS GP learns how related each source is, and a guard
  drops the unrelated ones (``optimizers/saasbo/transfer.py``). The study has no Sobol
  start: its first trials are the sources' fronts, then the model proposes. The learned
  correlations are in the study view (``transfer``). Needs optimizer ``saasbo`` and no
  fidelity section.

The server checks the sources when the study is created (``storage.repository.transfer``):
each must exist and be readable by the caller (404 naming the field otherwise), search the
same family (422), and have a completed trial (422).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.pareto import ObjectivePoint, pareto_indices
from autopeft_service.domain.spaces import ParamValue, SearchSpaceBase, point_key

if TYPE_CHECKING:
    from autopeft_service.domain.study import StudySpec

#: Most studies one study may be warmed from.
MAX_SOURCES = 20
#: Largest study id (the API's path parameters take the same bound).
MAX_ID = 2**31 - 1

WarmStartMode = Literal["model", "seed"]


class WarmStart(BaseModel):
    """A study spec's ``warm_start`` section (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_studies: list[Annotated[StrictInt, Field(ge=1, le=MAX_ID)]] = Field(
        min_length=1, max_length=MAX_SOURCES,
        description="Earlier studies of the same family (another task or backbone allowed) "
        "to learn from; each must be readable by the caller.")
    mode: WarmStartMode = Field(
        "seed", description="seed (default): their observed Pareto configurations, mapped "
        "to this backbone, are this study's first trials; model: their observations in the "
        "saasbo optimiser's model as other tasks, the task correlations learnt.")

    @field_validator("from_studies")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("names a study twice")
        return value


@dataclass(frozen=True)
class SourceTrial:
    """A completed trial of a source study, as transfer reads it.

    Attributes:
        study_id: its study.
        number: its number in that study.
        params: its point in the source's space.
        score: its observed held-out score.
        share: its parameter share (the source's objective share).
    """

    study_id: int
    number: int
    params: dict[str, ParamValue]
    score: float
    share: float


@dataclass(frozen=True)
class TransferredPoint:
    """A source configuration as a point of the target space.

    Attributes:
        params: the point in the target space.
        source: the source trial it came from.
    """

    params: dict[str, ParamValue]
    source: SourceTrial

    @property
    def generator(self) -> str:
        """The trial's generator: ``transfer:<study>#<trial number>``."""
        return f"transfer:{self.source.study_id}#{self.source.number}"


def observed_front(trials: Sequence[SourceTrial]) -> list[SourceTrial]:
    """The non-dominated trials (score max, share min), by share."""
    if not trials:
        return []
    points = [ObjectivePoint(score=t.score, share=t.share) for t in trials]
    return sorted((trials[i] for i in pareto_indices(points)), key=lambda t: t.share)


def transfer_points(trials: Sequence[SourceTrial], source_space: SearchSpaceBase,
                    target_space: SearchSpaceBase) -> list[TransferredPoint]:
    """The trials' points in the target space, in order; a point with no counterpart
    there is left out, and so is one that maps onto a point already taken.

    Args:
        trials: the source trials.
        source_space: their study's space.
        target_space: the new study's space (same family).

    Returns:
        The mapped points, each with its source trial.

    Raises:
        ConfigError: the spaces are of different families.
    """
    out: list[TransferredPoint] = []
    taken: set[tuple[tuple[str, ParamValue], ...]] = set()
    if source_space.kind != target_space.kind:
        raise ConfigError(f"transfer needs one family: {source_space.kind!r} points cannot "
                          f"become {target_space.kind!r} points")
    for trial in trials:
        try:
            mapped = target_space.transfer_point(trial.params, source_space)
        except ConfigError:  # a stored point its own space no longer accepts: no counterpart
            continue
        if mapped is None or point_key(mapped) in taken:
            continue
        taken.add(point_key(mapped))
        out.append(TransferredPoint(mapped, trial))
    return out


def with_warm_start(spec: StudySpec, studies: Sequence[int] | None, mode: str | None
                    ) -> StudySpec:
    """``spec`` with a warm start given apart from it (``autopeft submit --warm-start``, the
    Python client's ``submit(warm_start=...)``): ``studies`` replace the spec's sources,
    ``mode`` its mode.

    Args:
        spec: the study spec.
        studies: source study ids, or None to keep the spec's.
        mode: model or seed, or None to keep the spec's (seed when it has none).

    Returns:
        The spec with its ``warm_start`` set.

    Raises:
        ConfigError: a mode without any source (given or in the spec), or an invalid id.
    """
    current = spec.warm_start
    sources = list(studies) if studies else (current.from_studies if current else None)
    if not sources:
        raise ConfigError("--warm-start-mode: needs --warm-start ID (or warm_start in the spec)")
    chosen = mode or (current.mode if current else "seed")
    try:
        warm = WarmStart.model_validate({"from_studies": sources, "mode": chosen})
    except ValueError as error:
        raise ConfigError(f"--warm-start: {error}") from None
    return spec.model_copy(update={"warm_start": warm})
