"""Repository: every read and write of studies, trials and workers, with written contracts.

Each function takes an open ``Session`` (one transaction, see ``Database.session``) and
states what it promises. Nothing here knows about HTTP; routes map the exceptions below to
status codes. Times are database times (``database_now``).

Concurrency contracts:
  * ``lease_trial`` hands a ready trial to exactly one caller: on PostgreSQL the row is
    taken with ``FOR UPDATE SKIP LOCKED``; on SQLite the transaction began with
    ``BEGIN IMMEDIATE`` and so runs alone among writers.
  * Reports lock the trial row (PostgreSQL ``FOR UPDATE``; SQLite: immediate transaction)
    before deciding, so a report and a re-lease never interleave.

One module per entity group (``tenants``, ``studies``, ``trials``, ``leases``,
``results``, ``workers``; shared helpers in ``_common``); this package re-exports every public name,
so callers write ``repository.lease_trial``.
"""

from autopeft_service.storage.repository._common import (
    LeaseConflict,
    NotFound,
    StudyNotRunning,
)
from autopeft_service.storage.repository.leases import (
    HeartbeatAnswer,
    Lease,
    extend_lease,
    heartbeat,
    lease_trial,
    sweep_expired_leases,
)
from autopeft_service.storage.repository.results import (
    ArtifactRefused,
    ReportOutcome,
    TrialStatus,
    artifact_upload_check,
    complete_trial,
    fail_trial,
    record_artifact,
)
from autopeft_service.storage.repository.studies import (
    StudyTally,
    cancel_study,
    clear_proposer_failures,
    complete_study,
    create_study,
    ended_trial_count,
    fail_study,
    finish_study_if_done,
    get_study,
    list_studies,
    record_proposer_failure,
    running_study_ids,
    study_budget,
    study_tallies,
)
from autopeft_service.storage.repository.tenants import (
    TenantExists,
    TenantUsage,
    audit,
    audit_admin,
    create_tenant,
    create_token,
    get_tenant,
    limits_target,
    list_audit,
    list_tenants,
    list_tokens,
    principal_for_token,
    queue_room,
    revoke_token,
    running_studies_left,
    set_tenant_limits,
    tenant_names,
    tenant_usage,
    token_digest,
    token_revoked_now,
    token_target,
)
from autopeft_service.storage.repository.transfer import (
    SourceStudy,
    completed_source_trials,
    model_sources,
    record_transfer,
    warm_start_sources,
)
from autopeft_service.storage.repository.trials import (
    Proposal,
    add_trials,
    get_trial,
    leased_trials,
    list_trials,
    repeated_failure,
    trial_counts,
    trials_in_states,
    worker_names_of_study,
)
from autopeft_service.storage.repository.workers import (
    list_workers,
    record_sightings,
    worker_counts,
)

__all__ = [
    "ArtifactRefused",
    "HeartbeatAnswer",
    "Lease",
    "LeaseConflict",
    "NotFound",
    "Proposal",
    "ReportOutcome",
    "StudyNotRunning",
    "StudyTally",
    "TenantExists",
    "TenantUsage",
    "TrialStatus",
    "add_trials",
    "artifact_upload_check",
    "audit",
    "audit_admin",
    "limits_target",
    "token_revoked_now",
    "token_target",
    "cancel_study",
    "clear_proposer_failures",
    "complete_study",
    "complete_trial",
    "create_study",
    "create_tenant",
    "create_token",
    "ended_trial_count",
    "extend_lease",
    "fail_study",
    "fail_trial",
    "finish_study_if_done",
    "get_study",
    "get_tenant",
    "get_trial",
    "heartbeat",
    "lease_trial",
    "SourceStudy",
    "completed_source_trials",
    "model_sources",
    "record_transfer",
    "warm_start_sources",
    "leased_trials",
    "list_audit",
    "list_studies",
    "list_tenants",
    "list_tokens",
    "list_trials",
    "list_workers",
    "principal_for_token",
    "queue_room",
    "record_artifact",
    "record_proposer_failure",
    "record_sightings",
    "repeated_failure",
    "revoke_token",
    "running_studies_left",
    "running_study_ids",
    "set_tenant_limits",
    "study_budget",
    "study_tallies",
    "sweep_expired_leases",
    "tenant_names",
    "tenant_usage",
    "token_digest",
    "trial_counts",
    "trials_in_states",
    "worker_counts",
    "worker_names_of_study",
]
