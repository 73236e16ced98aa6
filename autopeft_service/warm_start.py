"""Warm start's service side (``domain.warm_start``).

* ``seed`` mode: the sources' observed Pareto configurations, mapped to the new study's
  space, become its first trials, queued in the transaction that creates it
  (``seed_study``).
* ``model`` mode: at every proposal the sources' completed trials, mapped to the study's
  space, join its history as ``History.transfer`` (``transfer_observations``); the
  ``saasbo`` optimiser models them as other tasks (``optimizers/saasbo/transfer.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.spaces import ParamValue, SearchSpaceBase, point_key
from autopeft_service.domain.study import StudySpec
from autopeft_service.domain.warm_start import TransferredPoint, observed_front, transfer_points
from autopeft_service.optimizers.base import Suggestion, TransferObservation
from autopeft_service.proposer_fidelity import proposal
from autopeft_service.storage import repository as repo
from autopeft_service.storage.models import TrialRow
from autopeft_service.storage.repository.transfer import SourceStudy


def seed_points(spec: StudySpec, sources: Sequence[SourceStudy]) -> list[TransferredPoint]:
    """Every source's observed front, mapped to ``spec``'s space, sources in order and each
    front by share; a point with no counterpart, or one already taken, is left out."""
    points: list[TransferredPoint] = []
    for source in sources:
        points += transfer_points(observed_front(source.trials), source.space, spec.space)
    seen: set[tuple[tuple[str, ParamValue], ...]] = set()
    out = []
    for point in points:
        key = point_key(point.params)
        if key not in seen:
            seen.add(key)
            out.append(point)
    return out


def seed_study(session: Session, study_id: int, spec: StudySpec,
               sources: Sequence[SourceStudy]) -> list[TrialRow]:
    """Queue the mapped source fronts as the study's first trials (generator
    ``transfer:<study>#<number>``), never beyond its budget.

    Args:
        session: the transaction that created the study.
        study_id: the new study.
        spec: its spec (``warm_start.mode == "seed"``).
        sources: its checked sources (``repo.warm_start_sources``).

    Returns:
        The trials queued.
    """
    proposals = [proposal(spec, Suggestion(p.params, p.generator))
                 for p in seed_points(spec, sources)]
    if not proposals:
        return []
    return repo.add_trials(session, study_id, proposals, max_new=spec.budget.total_trials)


def transfer_observations(sources: Sequence[SourceStudy], space: SearchSpaceBase
                          ) -> list[TransferObservation]:
    """Every completed trial of the sources as an observation at its point in ``space``
    (``warm_start.mode: model``). Unlike seeding, two trials that map to one point both
    stay: they are two observations. A trial with no counterpart in ``space`` is left out.

    Args:
        sources: the study's sources (``repo.model_sources``).
        space: the study's space (same family).
    """
    out: list[TransferObservation] = []
    for source in sources:
        for trial in source.trials:
            try:
                mapped = space.transfer_point(trial.params, source.space)
            except ConfigError:  # a stored point its own space no longer accepts
                continue
            if mapped is not None:
                out.append(TransferObservation(source=source.study_id, number=trial.number,
                                               params=mapped, score=trial.score,
                                               share=trial.share))
    return out
