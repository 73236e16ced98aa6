"""autopeft_service.api.uploads: the streaming, size limit and hash check shared by the
artefact and checkpoint uploads."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException
from starlette.requests import Request

from autopeft_service.api.uploads import (
    check_declared_size,
    check_sha256,
    stream_to_store,
)


def _request(chunks: list[bytes], headers: dict[str, str] | None = None) -> Request:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "PUT", "headers": raw}, receive)


def test_streams_the_body_to_the_file_with_its_hash_and_size(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    sha256, size = asyncio.run(stream_to_store(_request([b"abc", b"def"]), staged, 6))
    assert staged.read_bytes() == b"abcdef" and size == 6
    assert sha256 == hashlib.sha256(b"abcdef").hexdigest()


def test_a_body_above_the_limit_is_413(tmp_path: Path) -> None:
    with pytest.raises(HTTPException) as caught:
        asyncio.run(stream_to_store(_request([b"abc", b"def"]), tmp_path / "staged", 5))
    assert caught.value.status_code == 413 and "max_artifact_bytes" in str(caught.value.detail)


@pytest.mark.parametrize("declared", ["6", "x"])
def test_a_declared_length_above_the_limit_or_not_a_number_is_413(declared: str) -> None:
    check_declared_size(_request([b""], {"content-length": "5"}), 5)
    with pytest.raises(HTTPException) as caught:
        check_declared_size(_request([b""], {"content-length": declared}), 5)
    assert caught.value.status_code == 413


def test_a_hash_that_differs_is_422_with_the_note() -> None:
    check_sha256("a" * 64, "a" * 64)
    with pytest.raises(HTTPException) as caught:
        check_sha256("a" * 64, "b" * 64, "damaged in transit")
    assert caught.value.status_code == 422
    [detail] = caught.value.detail
    assert detail["type"] == "sha256_mismatch" and detail["loc"] == ["header", "X-Artifact-SHA256"]
    assert detail["msg"].endswith(f"the header says {'b' * 64}: damaged in transit")
