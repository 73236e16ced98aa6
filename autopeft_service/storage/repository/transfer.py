"""Reads for warm start (``domain.warm_start``): a new study's source studies, checked, and
their completed trials, read when they are needed (at creation for ``seed`` mode, at
proposal time for ``model`` mode), never copied into the new study."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.spaces import SearchSpaceBase
from autopeft_service.domain.study import StudySpec, TrialState
from autopeft_service.domain.warm_start import SourceTrial
from autopeft_service.storage.models import StudyRow, TrialRow
from autopeft_service.storage.repository._common import NotFound


@dataclass(frozen=True)
class SourceStudy:
    """A warm start's source study.

    Attributes:
        study_id: its id.
        space: its search space (points of its trials are in it).
        trials: its completed trials with a finite score and share, by number.
    """

    study_id: int
    space: SearchSpaceBase
    trials: list[SourceTrial]


def completed_source_trials(session: Session, study_id: int) -> list[SourceTrial]:
    """The study's completed trials with a finite score and share, by number."""
    rows = session.execute(select(TrialRow).where(
        TrialRow.study_id == study_id, TrialRow.state == TrialState.COMPLETED.value)
        .order_by(TrialRow.number)).scalars()
    return [SourceTrial(study_id, row.number, dict(row.params), float(row.objective),
                        float(row.param_share))
            for row in rows
            if row.objective is not None and row.param_share is not None
            and math.isfinite(row.objective) and math.isfinite(row.param_share)]


def warm_start_sources(session: Session, spec: StudySpec,
                       tenant_id: int | None) -> list[SourceStudy]:
    """The sources ``spec.warm_start`` names, checked for a new study.

    Args:
        session: an open transaction.
        spec: the new study's spec.
        tenant_id: the caller's tenant (None: an admin, who may read every study).

    Returns:
        The source studies in the order named (empty without a warm start).

    Raises:
        NotFound: a source does not exist or the caller may not read it (the message names
            the field, ``warm_start.from_studies.<i>``).
        ConfigError: a source searches another family, its stored spec no longer
            validates, or it has no completed trial (the message names the field).
    """
    if spec.warm_start is None:
        return []
    sources = []
    for index, study_id in enumerate(spec.warm_start.from_studies):
        field = f"warm_start.from_studies.{index}"
        row = session.get(StudyRow, study_id)
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            raise NotFound(f"{field}: study {study_id} does not exist")
        try:
            source_spec = StudySpec.model_validate(row.spec)
        except ValidationError:
            raise ConfigError(f"{field}: study {study_id}'s stored spec no longer "
                              "validates, so its points cannot be read") from None
        if source_spec.space.kind != spec.space.kind:
            raise ConfigError(f"{field}: study {study_id} searches the "
                              f"{source_spec.space.kind!r} family, this study "
                              f"{spec.space.kind!r}: transfer needs the same family")
        trials = completed_source_trials(session, study_id)
        if not trials:
            raise ConfigError(f"{field}: study {study_id} has no completed trial to learn "
                              "from")
        sources.append(SourceStudy(study_id, source_spec.space, trials))
    return sources


def model_sources(session: Session, spec: StudySpec) -> list[SourceStudy]:
    """The sources of a running warm-started study (``warm_start.mode: model``), read at
    proposal time: each one still there, of the same family, with its completed trials
    now (a source that is still running contributes what it has). The caller's right to
    read them was checked when the study was created; a source deleted since, or whose
    stored spec no longer validates, is skipped."""
    if spec.warm_start is None:
        return []
    sources = []
    for study_id in spec.warm_start.from_studies:
        row = session.get(StudyRow, study_id)
        if row is None:
            continue
        try:
            source_spec = StudySpec.model_validate(row.spec)
        except ValidationError:
            continue
        if source_spec.space.kind != spec.space.kind:
            continue
        sources.append(SourceStudy(study_id, source_spec.space,
                                   completed_source_trials(session, study_id)))
    return sources


def record_transfer(session: Session, study_id: int, report: dict[str, Any]) -> None:
    """Keep a warm-started study's latest model report (``studies.transfer``; the
    ``optimizers.base.TransferReport`` fields as JSON, with ``at``)."""
    session.execute(update(StudyRow).where(StudyRow.id == study_id).values(transfer=report))
