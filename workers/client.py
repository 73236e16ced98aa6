"""HTTP client of the worker protocol: lease, heartbeat, report result or failure.

Transient trouble (connection refused or reset, timeouts, HTTP 5xx/503) is retried with
capped exponential backoff and jitter, so a server restart never crashes a worker and a
finished result is kept until the server accepts it. Errors that retrying cannot fix are
raised: ``LeaseLost`` (409: the lease is no longer ours), ``ProtocolError`` (401/403/404/422).
"""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from autopeft_service.client import check_server_url
from autopeft_service.domain.errors import AutopeftError
from autopeft_service.domain.protocol import (
    FailureIn,
    HeartbeatIn,
    HeartbeatOut,
    LeaseOut,
    LeaseRequest,
    ReportOut,
    ResultIn,
)
from autopeft_service.domain.trial import RungScore, TrialResult

log = logging.getLogger(__name__)


def default_worker_name(device: str) -> str:
    """``host:device``, unique per machine and device."""
    return f"{socket.gethostname()}:{device}"


class ProtocolError(AutopeftError):
    """The server refused a request in a way retrying cannot fix (bad token, bad body)."""


class LeaseLost(AutopeftError):
    """The lease is no longer this worker's (HTTP 409): drop the trial."""


class ServerUnavailable(AutopeftError):
    """A request that is not retried (a heartbeat) met a transient failure."""


class Interrupted(AutopeftError):
    """A retry loop was interrupted by the worker's stop event."""


class ServerClient:
    """A worker's connection to the server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: a worker bearer token.
        worker: this worker's name.
        timeout: seconds per HTTP request (a long-poll adds its wait).
        max_backoff: cap of the retry delay in seconds.
        stop: when set, retry loops give up with ``Interrupted``.
    """

    def __init__(self, base_url: str, token: str, worker: str, timeout: float = 30.0,
                 max_backoff: float = 30.0, stop: threading.Event | None = None) -> None:
        self.worker = worker
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.stop = stop or threading.Event()
        self._http = httpx.Client(base_url=check_server_url(base_url), timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(self, path: str, body: dict[str, Any] | None = None,
                 timeout: float | None = None, retry: bool = True, interruptible: bool = True,
                 method: str = "POST", content: bytes | None = None,
                 headers: dict[str, str] | None = None) -> httpx.Response:
        """POST ``body`` as JSON (or send ``content`` with ``method``) with retries on
        transient failures; returns a 2xx/204/404/409 response.

        Raises:
            ProtocolError: 401, 403 or 422 (or other 4xx).
            Interrupted: the stop event was set while waiting to retry (``interruptible``
                requests only: a finished result is retried whatever the stop event says).
            ServerUnavailable: transient failure and ``retry`` is False.
        """
        delay = 0.5
        while True:
            try:
                response = self._http.request(method, path, json=body, content=content,
                                              headers=headers, timeout=timeout or self.timeout)
                if response.status_code < 500:
                    if response.status_code in (401, 403, 422) or (
                            400 <= response.status_code < 500
                            and response.status_code not in (404, 409)):
                        raise ProtocolError(f"{path}: HTTP {response.status_code}: "
                                            f"{response.text[:500]}")
                    return response
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            if not retry:
                raise ServerUnavailable(f"{path}: {problem}")
            wait = min(self.max_backoff, delay) * (0.5 + random.random())  # noqa: S311
            log.warning("%s failed (%s); retrying in %.1f s", path, problem, wait)
            if interruptible and self.stop.wait(wait):
                raise Interrupted(f"{path}: stopped while retrying")
            if not interruptible:
                time.sleep(wait)
            delay *= 2

    def wait_until_reachable(self, timeout: float) -> None:
        """Wait (retrying) until the server answers its health check, at most ``timeout``
        seconds: a worker started before its server waits for it, one pointed at a wrong
        address says so instead of retrying for ever.

        Raises:
            ServerUnavailable: no healthy answer within ``timeout`` seconds.
            Interrupted: the stop event was set meanwhile.
        """
        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            try:
                response = self._http.get("/v1/health", timeout=min(self.timeout, 10.0))
                if response.status_code == 200:
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}" if str(error) \
                    else type(error).__name__
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerUnavailable(f"cannot reach the server at {self._http.base_url} "
                                        f"({problem}) within {timeout:g} s")
            if self.stop.wait(min(delay, left)):
                raise Interrupted("stopped while waiting for the server")
            delay = min(delay * 2, 5.0)

    def lease(self, wait_seconds: float | None = None) -> LeaseOut | None:
        """Ask for a trial; None when nothing was ready within the long-poll."""
        body = LeaseRequest(worker=self.worker, wait_seconds=wait_seconds)
        response = self._request("/v1/leases", body.model_dump(),
                                 timeout=self.timeout + (wait_seconds or 0) + 60)
        if response.status_code == 204:
            return None
        return LeaseOut.model_validate(response.json())

    def heartbeat(self, trial_id: int, token: str, progress: dict[str, Any] | None = None,
                  retry: bool = False, rungs: Sequence[RungScore] = ()) -> HeartbeatOut:
        """Extend the lease, sending progress and rung scores not yet acknowledged.

        Raises:
            LeaseLost: 409/404.
            ServerUnavailable: the server cannot be reached (the caller keeps training and
                sends the rung scores again with the next heartbeat).
            ProtocolError: 422, e.g. a rung the study does not have.
        """
        body = HeartbeatIn(token=token, progress=progress, rungs=list(rungs))
        response = self._request(f"/v1/trials/{trial_id}/heartbeat",
                                 body.model_dump(mode="json"), retry=retry)
        self._raise_lost(response)
        return HeartbeatOut.model_validate(response.json())

    def report_result(self, trial_id: int, token: str, result: TrialResult,
                      interruptible: bool = True) -> ReportOut:
        """Deliver a result, retrying until the server accepts it; the answer's ``state``
        is ``failed`` when the server recorded it as a failure (its parameter counts differ
        from the server's). Raises LeaseLost on 409."""
        response = self._request(f"/v1/trials/{trial_id}/result",
                                 ResultIn(token=token, result=result).model_dump(mode="json"),
                                 interruptible=interruptible)
        self._raise_lost(response)
        return ReportOut.model_validate(response.json())

    def report_failure(self, trial_id: int, token: str, reason: str, retry: bool = True,
                       preempted: bool = False, interruptible: bool = True) -> ReportOut:
        """Report a failed attempt (retrying delivery); the answer says whether the trial
        was requeued (``ready``) or failed. Raises LeaseLost on 409."""
        body = FailureIn(token=token, reason=reason, retry=retry, preempted=preempted)
        response = self._request(f"/v1/trials/{trial_id}/failure", body.model_dump(),
                                 interruptible=interruptible)
        self._raise_lost(response)
        return ReportOut.model_validate(response.json())

    def upload_artifact(self, trial_id: int, token: str, data: bytes, sha256: str,
                        interruptible: bool = True) -> dict[str, Any]:
        """Upload a completed trial's packed artefact under its lease, retrying transient
        failures (with capped backoff) until the server answers.

        Returns:
            The server's ``ArtifactOut`` (``duplicate`` when one was already stored).

        Raises:
            LeaseLost: 404/409: the trial or lease is gone, or the trial is not completed.
            ProtocolError: 413 (too large for the server), 422 (hash or archive refused),
                401/403.
            Interrupted: the stop event was set while waiting to retry.
        """
        response = self._request(
            f"/v1/trials/{trial_id}/artifact", method="PUT", content=data,
            headers={"X-Lease-Token": token, "X-Artifact-SHA256": sha256,
                     "Content-Type": "application/zip"},
            timeout=self.timeout + len(data) / 1e6, interruptible=interruptible)
        self._raise_lost(response)
        return response.json()

    def upload_checkpoint(self, trial_id: int, token: str, data: bytes, sha256: str,
                          step: int) -> dict[str, Any]:
        """Upload a paused trial's packed checkpoint under its lease (before its result),
        retrying transient failures.

        Returns:
            The server's ``CheckpointOut``.

        Raises:
            LeaseLost: 404/409: the lease is gone, or the trial trains in full.
            ProtocolError: 413, 422 (hash or archive refused), 401/403.
            Interrupted: the stop event was set while waiting to retry.
        """
        response = self._request(
            f"/v1/trials/{trial_id}/checkpoint", method="PUT", content=data,
            headers={"X-Lease-Token": token, "X-Artifact-SHA256": sha256,
                     "X-Checkpoint-Step": str(step), "Content-Type": "application/x-tar"},
            timeout=self.timeout + len(data) / 1e6)
        self._raise_lost(response)
        return dict(response.json())

    def download_checkpoint(self, trial_id: int, sha256: str) -> bytes:
        """The trial's checkpoint, checked against ``sha256`` (the lease's
        ``resume_sha256``).

        Raises:
            LeaseLost: 404: the server has no checkpoint for the trial.
            ProtocolError: the bytes that arrived have another SHA-256.
            Interrupted: the stop event was set while waiting to retry.
        """
        response = self._request(f"/v1/trials/{trial_id}/checkpoint", method="GET")
        self._raise_lost(response)
        data = response.content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ProtocolError(f"trial {trial_id}: the checkpoint that arrived is not "
                                f"{sha256} (damaged in transit, or replaced)")
        return data

    @staticmethod
    def _raise_lost(response: httpx.Response) -> None:
        if response.status_code in (404, 409):
            raise LeaseLost(response.json().get("detail", response.text))
