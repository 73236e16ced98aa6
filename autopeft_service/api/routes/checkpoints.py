"""Checkpoints of a fidelity study's paused trials (``domain.fidelity``), kept in the
artefact store so that any worker can resume the trial.

``PUT /v1/trials/{id}/checkpoint`` (worker role): the packed checkpoint (a tar written by
``workers.checkpoint``) as the raw body, under the lease that trained it
(``X-Lease-Token``), with its SHA-256 (``X-Artifact-SHA256``) and the training step it
holds (``X-Checkpoint-Step``); streamed to the store, checked on arrival, then recorded.
It comes before the result: a result below full training needs the checkpoint of its
step. 409 when the trial is not leased below full training or another lease holds it; 413
above ``max_artifact_bytes``; 422 for a hash that differs or a body that is not a tar.

``GET /v1/trials/{id}/checkpoint`` (worker role) streams it back, hash in
``X-Artifact-SHA256``, for the worker that leased the trial's continuation.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from autopeft_service.api.deps import ServicesDep, Worker, WorkerAuth
from autopeft_service.api.routes.artifacts import SHA256
from autopeft_service.api.routes.workers import TrialId, _conflict
from autopeft_service.api.schemas import error_responses
from autopeft_service.api.services import Services
from autopeft_service.api.uploads import SHA_HEADER, check_declared_size, check_sha256, stream_to_store
from autopeft_service.storage import repository as repo
from autopeft_service.storage.artifacts import read_chunks
from autopeft_service.storage.repository import fidelity as fidelity_repo

router = APIRouter(prefix="/v1", tags=["workers"], dependencies=[WorkerAuth])


class CheckpointOut(BaseModel):
    """A stored checkpoint."""

    trial_id: int
    sha256: str
    bytes: int
    step: int


def _check(services: Services, trial_id: int, token: str) -> None:
    try:
        with services.database.session() as session:
            fidelity_repo.checkpoint_upload_check(session, trial_id, token)
    except fidelity_repo.CheckpointRefused as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    except (repo.NotFound, repo.LeaseConflict) as error:
        raise _conflict(error) from None


def _record(services: Services, trial_id: int, token: str, sha256: str, size: int,
            step: int) -> None:
    try:
        with services.database.session() as session:
            replaced = fidelity_repo.record_checkpoint(session, trial_id, token, sha256, size,
                                                       step)
    except fidelity_repo.CheckpointRefused as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    except (repo.NotFound, repo.LeaseConflict) as error:
        raise _conflict(error) from None
    if replaced is not None:  # the checkpoint of an earlier level: superseded
        services.artifacts.remove(trial_id, replaced)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


@router.put("/trials/{trial_id}/checkpoint", response_model=CheckpointOut,
            responses=error_responses(401, 403, 404, 409, 413, 422, 503),
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_checkpoint(
        trial_id: TrialId, request: Request, services: ServicesDep,
        x_lease_token: Annotated[str, Header(min_length=1, max_length=64,
                                             description="The lease that trained it.")],
        x_artifact_sha256: Annotated[str, Header(pattern=SHA256,
                                                 description="SHA-256 of the body.")],
        x_checkpoint_step: Annotated[int, Header(ge=1, le=10**12,
                                                 description="The step it holds.")],
) -> CheckpointOut:
    """Store a paused trial's checkpoint (streamed, checked, recorded under the lease)."""
    limit = services.settings.max_artifact_bytes
    check_declared_size(request, limit)
    await run_in_threadpool(_check, services, trial_id, x_lease_token)
    store = services.artifacts
    staged = await run_in_threadpool(store.staging_file)
    try:
        sha256, size = await stream_to_store(request, staged, limit)
        check_sha256(sha256, x_artifact_sha256)
        if not await run_in_threadpool(_is_tar, staged):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                "loc": ["body"], "type": "not_a_checkpoint", "msg": "not a tar archive"}])
        await run_in_threadpool(store.commit, staged, trial_id, sha256)
    finally:
        store.discard(staged)
    try:
        await run_in_threadpool(_record, services, trial_id, x_lease_token, sha256, size,
                                x_checkpoint_step)
    except BaseException:
        store.remove(trial_id, sha256)
        raise
    return CheckpointOut(trial_id=trial_id, sha256=sha256, bytes=size, step=x_checkpoint_step)


def _stored(services: Services, trial_id: int, tenant_id: int | None) -> tuple[Path, str]:
    """A paused trial's stored checkpoint (of ``tenant_id``'s studies; any tenant's when
    None): path and hash. Raises HTTPException 404."""
    try:
        with services.database.session() as session:
            sha256 = repo.get_trial(session, trial_id, tenant_id=tenant_id).checkpoint_sha256
    except repo.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    path = None if sha256 is None else services.artifacts.open(trial_id, sha256)
    if sha256 is None or path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"trial {trial_id} has no checkpoint")
    return path, sha256


@router.get("/trials/{trial_id}/checkpoint",
            responses={**error_responses(401, 403, 404, 503), 200: {
                "description": "The packed checkpoint (a tar).",
                "content": {"application/x-tar": {"schema": {"type": "string",
                                                             "format": "binary"}}}}})
async def download_checkpoint(trial_id: TrialId, services: ServicesDep,
                              caller: Worker) -> StreamingResponse:
    """Stream a paused trial's checkpoint (a private pool's worker: of its tenant's
    studies only); its hash is in ``X-Artifact-SHA256``."""
    path, sha256 = await run_in_threadpool(_stored, services, trial_id, caller.scope)
    return StreamingResponse(read_chunks(path), media_type="application/x-tar", headers={
        SHA_HEADER: sha256, "Content-Length": str(path.stat().st_size)})
