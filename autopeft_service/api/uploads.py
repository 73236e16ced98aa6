"""Streaming a worker's upload (an artefact or a checkpoint) into the artefact store: the
size limit (``max_artifact_bytes``, 413) and the SHA-256 check (422) that both upload
routes apply, written once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import HTTPException, Request, status

#: The header carrying the body's SHA-256 (named in a mismatch's ``loc``).
SHA_HEADER = "X-Artifact-SHA256"


def too_large(limit: int) -> HTTPException:
    """The 413 for a body above ``limit`` bytes.

    Args:
        limit: the server's ``max_artifact_bytes``.

    Returns:
        The exception to raise.
    """
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                         f"artefact larger than {limit} bytes (the server's "
                         "max_artifact_bytes)")


def check_declared_size(request: Request, limit: int) -> None:
    """Refuse a body whose declared ``Content-Length`` is above ``limit`` (or not a number)
    before anything is read.

    Args:
        request: the upload.
        limit: the server's ``max_artifact_bytes``.

    Raises:
        HTTPException: 413 (``too_large``).
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large(limit)


async def stream_to_store(request: Request, staged: Path, limit: int) -> tuple[str, int]:
    """Stream the request body into the staging file ``staged`` (never held in memory),
    hashing it on the way.

    Args:
        request: the upload.
        staged: the store's staging file to write (the caller commits or discards it).
        limit: the most bytes allowed (``max_artifact_bytes``).

    Returns:
        The body's SHA-256 (lower-case hex) and its size in bytes.

    Raises:
        HTTPException: 413 (``too_large``) once the body passes ``limit``.
    """
    digest, size = hashlib.sha256(), 0
    with staged.open("wb") as handle:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest(), size


def check_sha256(actual: str, declared: str, note: str = "") -> None:
    """Refuse a body whose SHA-256 differs from the one its header declared.

    Args:
        actual: the body's SHA-256, as ``stream_to_store`` computed it.
        declared: the ``X-Artifact-SHA256`` header.
        note: appended to the message (after ``: ``) when given.

    Raises:
        HTTPException: 422 with a ``sha256_mismatch`` detail on the header.
    """
    if actual == declared:
        return
    message = f"the body's SHA-256 is {actual}, the header says {declared}"
    raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
        "loc": ["header", SHA_HEADER], "type": "sha256_mismatch",
        "msg": f"{message}: {note}" if note else message}])
