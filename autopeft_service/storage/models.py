"""SQLAlchemy 2 tables: tenants and their tokens, studies, trials, workers and the audit log.

Times are seconds since the epoch read from the database clock (``storage.clock``), so
lease deadlines mean the same thing to every server process.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of every table (its metadata is Alembic's target)."""

    type_annotation_map = {dict[str, Any]: JSON}


class TenantRow(Base):
    """A team sharing the service (``domain.tenancy``): it owns studies and tokens."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    #: Share of the shared worker pool relative to other tenants.
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    #: Quotas (None: no limit): studies running at once (more: 429), trials leased at once
    #: (the fair share passes the tenant over), trials queued ready (the proposer stops).
    max_running_studies: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_parallel_trials: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_queued_trials: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class TokenRow(Base):
    """A bearer token: only its SHA-256 is stored (the secret is shown once, at creation)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    role: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    #: Hex SHA-256 of the token: a 256-bit random secret needs no salt or slow hash (no
    #: dictionary to try), and one indexed lookup finds it.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    #: Worker tokens: True serves every tenant (the shared pool), False the tenant's own.
    shared_pool: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AuditRow(Base):
    """Who created or cancelled a study, or changed a tenant or token, and when (admins
    read it)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(40))
    study_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: What an admin action changed (a tenant, a token); None for a study's actions.
    target: Mapped[str | None] = mapped_column(String(300), nullable=True)


class StudyRow(Base):
    """One search job."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The owner; every trial, artefact and view of the study is the tenant's.
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True, default=1,
                                           server_default="1")
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    #: Why the study ended early (failed), or why proposals are failing now (running).
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Consecutive failed proposer passes; the proposer skips the study until retry_at.
    proposer_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    proposer_retry_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: A model warm start's last report (``optimizers.base.TransferReport`` as JSON, with
    #: ``at``): the learned task correlation per source and whether the sources were used.
    transfer: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    trials: Mapped[list[TrialRow]] = relationship(back_populates="study", lazy="raise")


class TrialRow(Base):
    """One configuration to train, from proposal to result."""

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number", name="uq_trials_study_number"),
        Index("ix_trials_state_id", "state", "id"),
        # (study, state, id): a study's oldest ready trial without a sort (the fair share
        # leases from a chosen study), and its count of leased trials.
        Index("ix_trials_study_state_id", "study_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    generator: Mapped[str] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    param_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The server's analytic counts (set at proposal when the study has backbone_dims): the
    #: worker's report must match them.
    expected_trainable: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expected_deployed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    dev_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The uploaded adapter artefact (bytes in the artefact store, keyed by trial id):
    #: SHA-256 checked on arrival, size, arrival time; None until one arrives.
    artifact_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    artifact_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    artifact_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: A fidelity study's target level for the trial's current (or last) lease; None in a
    #: study without fidelity (every trial trains in full).
    fidelity: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The checkpoint of a trial paused below full training (bytes in the artefact store).
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checkpoint_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: The training step the checkpoint holds (a pause needs one at the result's step).
    checkpoint_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: 0 for a configuration's first trial; k for its k-th replicate, which trains the same
    #: configuration with the study's seed plus k (migration 0008).
    replicate: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[float] = mapped_column(Float)
    leased_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    study: Mapped[StudyRow] = relationship(back_populates="trials", lazy="raise")


class RungRow(Base):
    """A trial's score at one rung of its training, and the early-stopping decision taken
    on it (``domain.early_stopping``). One row per trial and rung: a later attempt of the
    trial (a new lease) replaces its rows as it reaches each rung again."""

    __tablename__ = "trial_rungs"
    __table_args__ = (Index("ix_trial_rungs_study_rung", "study_id", "rung"),)

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"),
                                          primary_key=True)
    rung: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    #: The lease the score came under: the same lease and rung again is a no-op.
    lease_token: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(BigInteger)
    score: Mapped[float] = mapped_column(Float)
    #: The trial's parameter share when the score arrived (None: not known yet).
    share: Mapped[float | None] = mapped_column(Float, nullable=True)
    examples: Mapped[int] = mapped_column(BigInteger)
    eval_seconds: Mapped[float] = mapped_column(Float)
    #: The rule's decision: True go on, False pruned, None no rule (curve recorded only).
    proceed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    decision: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class ObservationRow(Base):
    """A fidelity study's trial scored at one level (``domain.fidelity``): one row per
    trial and level, written with the result that reached it (idempotent by level)."""

    __tablename__ = "trial_observations"
    __table_args__ = (Index("ix_trial_observations_study", "study_id"),)

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"),
                                          primary_key=True)
    fidelity: Mapped[float] = mapped_column(Float, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    lease_token: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    dev_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    share: Mapped[float | None] = mapped_column(Float, nullable=True)
    step: Mapped[int] = mapped_column(BigInteger)
    #: Training plus scoring seconds of the lease that reached this level (new steps only).
    cost_seconds: Mapped[float] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class WorkerRow(Base):
    """A worker process, known by the name it leases under."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    leases: Mapped[int] = mapped_column(Integer, default=0)
    #: The pool the worker serves: a tenant's private pool, or None for the shared pool.
    pool_tenant_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
