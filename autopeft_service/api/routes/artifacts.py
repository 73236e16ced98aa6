"""Adapter artefacts: workers upload a completed trial's artefact under its lease; clients
download it.

``PUT /v1/trials/{id}/artifact`` (worker role) takes the packed artefact (a zip,
``autopeft_service.domain.artifact``) as the raw body, with the lease token the trial
completed under (``X-Lease-Token``) and the SHA-256 the worker computed
(``X-Artifact-SHA256``). The body streams to the store (never held in memory) and is
checked on arrival. The same lease uploading again is a no-op (200, ``duplicate``); a
token that is not the trial's lease gets 409; a trial not completed gets 409; a body above
``max_artifact_bytes`` gets 413; a hash that differs, or a body that is not an artefact
archive, gets 422.

``GET /v1/trials/{id}/artifact`` (reader role, own tenant) streams it back, with its hash in
``X-Artifact-SHA256``; 404 when the trial has none.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from autopeft_service.api.deps import Reader, ServicesDep, WorkerAuth
from autopeft_service.api.routes.workers import TrialId, _conflict
from autopeft_service.api.schemas import error_responses
from autopeft_service.api.services import Services
from autopeft_service.api.uploads import SHA_HEADER, check_declared_size, check_sha256, stream_to_store
from autopeft_service.domain.artifact import ARTIFACT_FILES
from autopeft_service.storage import repository as repo
from autopeft_service.storage.artifacts import read_chunks

router = APIRouter(prefix="/v1")
SHA256 = r"^[0-9a-f]{64}$"
#: Header names (lower case, as ASGI gives them).
TOKEN_HEADER = "X-Lease-Token"


class ArtifactOut(BaseModel):
    """A stored artefact."""

    trial_id: int
    sha256: str
    bytes: int
    duplicate: bool = Field(False, description="An artefact was already stored: nothing "
                            "changed.")


def _check_trial(services: Services, trial_id: int, token: str) -> ArtifactOut | None:
    """None when the upload may go ahead; the stored artefact when one is already there."""
    try:
        with services.database.session() as session:
            trial = repo.artifact_upload_check(session, trial_id, token)
            if trial.artifact_sha256 is not None:
                return ArtifactOut(trial_id=trial_id, sha256=trial.artifact_sha256,
                                   bytes=trial.artifact_bytes or 0, duplicate=True)
    except (repo.NotFound, repo.LeaseConflict) as error:
        raise _conflict(error) from None
    except repo.ArtifactRefused as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    return None


def _archive_problem(path: Path) -> str | None:
    """Why the file is not an artefact archive, or None (members only: the worker checked
    the contents, and the client checks them again on unpacking)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(archive.namelist())
    except zipfile.BadZipFile:
        return "not a zip archive"
    if names != sorted(ARTIFACT_FILES):
        return f"holds {names}, expected {sorted(ARTIFACT_FILES)}"
    return None


def _record(services: Services, trial_id: int, token: str, sha256: str, size: int) -> str:
    """Record the artefact; returns the hash now recorded (another upload's if it won)."""
    with services.database.session() as session:
        if repo.record_artifact(session, trial_id, token, sha256, size):
            return sha256
        return repo.get_trial(session, trial_id).artifact_sha256 or sha256


@router.put("/trials/{trial_id}/artifact", response_model=ArtifactOut, dependencies=[WorkerAuth],
            tags=["workers", "artifacts"],
            responses=error_responses(401, 403, 404, 409, 413, 422, 503),
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_artifact(
        trial_id: TrialId, request: Request, services: ServicesDep,
        x_lease_token: Annotated[str, Header(min_length=1, max_length=64,
                                             description="The lease the trial completed under.")],
        x_artifact_sha256: Annotated[str, Header(pattern=SHA256,
                                                 description="SHA-256 of the body, lower-case hex.")],
) -> ArtifactOut:
    """Store a completed trial's artefact (streamed, checked, idempotent per lease)."""
    limit = services.settings.max_artifact_bytes
    check_declared_size(request, limit)
    stored = await run_in_threadpool(_check_trial, services, trial_id, x_lease_token)
    if stored is not None:
        return stored
    store = services.artifacts
    staged = await run_in_threadpool(store.staging_file)
    try:
        sha256, size = await stream_to_store(request, staged, limit)
        check_sha256(sha256, x_artifact_sha256, "damaged in transit")
        problem = await run_in_threadpool(_archive_problem, staged)
        if problem is not None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
                "loc": ["body"], "type": "not_an_artifact",
                "msg": f"not an artefact archive: {problem}"}])
        await run_in_threadpool(store.commit, staged, trial_id, sha256)
    finally:
        store.discard(staged)  # nothing left after a commit (renamed) or a refusal
    try:
        recorded = await run_in_threadpool(_record, services, trial_id, x_lease_token, sha256,
                                           size)
    except BaseException:
        store.remove(trial_id, sha256)
        raise
    if recorded != sha256:  # a concurrent upload of other bytes was recorded first
        store.remove(trial_id, sha256)
        return ArtifactOut(trial_id=trial_id, sha256=recorded, bytes=size, duplicate=True)
    return ArtifactOut(trial_id=trial_id, sha256=sha256, bytes=size)


def _stored(services: Services, trial_id: int, tenant_id: int | None
            ) -> tuple[Path, str, int]:
    """The stored artefact of a trial of ``tenant_id``'s (any tenant's when None): path,
    hash and size. Raises HTTPException 404."""
    try:
        with services.database.session() as session:
            trial = repo.get_trial(session, trial_id, tenant_id=tenant_id)
            sha256, size = trial.artifact_sha256, trial.artifact_bytes
    except repo.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    if sha256 is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"trial {trial_id} has no artefact (not completed, or its worker "
                            "has not uploaded it yet)")
    path = services.artifacts.open(trial_id, sha256)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"trial {trial_id}: its artefact {sha256} is recorded but missing "
                            f"from the store ({services.settings.artifact_dir})")
    return path, sha256, size or path.stat().st_size


@router.get("/trials/{trial_id}/artifact", tags=["artifacts"],
            responses={**error_responses(401, 403, 404, 503), 200: {
                "description": "The packed artefact (a zip).",
                "content": {"application/zip": {"schema": {"type": "string",
                                                           "format": "binary"}}}}})
async def download_artifact(trial_id: TrialId, services: ServicesDep,
                            caller: Reader) -> StreamingResponse:
    """Stream a trial's artefact (of the caller's tenant: another tenant's is a 404); its
    hash is in ``X-Artifact-SHA256``."""
    path, sha256, size = await run_in_threadpool(_stored, services, trial_id, caller.scope)
    return StreamingResponse(read_chunks(path), media_type="application/zip", headers={
        SHA_HEADER: sha256, "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="trial-{trial_id}-artifact.zip"'})
