"""A worker's artefacts on their way to the server, kept on disk until the server has them.

Each trial gets a folder ``<root>/<trial id>/``: the runner writes the artefact into
``artifact/`` while the trial runs; once the trial's result is accepted, ``lease.json``
(trial id and lease token) marks it ready to upload. An upload that fails for a transient
reason leaves the folder in place and is tried again before the next lease, and by the next
worker started on the same folder, so a killed worker or a server outage loses no artefact.
Folders without ``lease.json`` belong to trials whose result never reached the server (the
trial will be leased again): they are removed. The result never waits on the upload.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from autopeft_service.domain.artifact import ArtifactError, pack
from workers.client import Interrupted, LeaseLost, ProtocolError, ServerClient

log = logging.getLogger(__name__)
LEASE_FILE = "lease.json"
ARTIFACT_FOLDER = "artifact"


class PendingUploads:
    """The artefacts of one worker not yet on the server.

    Args:
        root: the worker's folder for them (one per worker: two workers must not share one).
        client: the worker's protocol client.
    """

    def __init__(self, root: str | Path, client: ServerClient) -> None:
        self.root = Path(root)
        self.client = client
        self.uploaded = 0
        self.dropped = 0

    def artifact_dir(self, trial_id: int) -> Path:
        """Where the runner writes trial ``trial_id``'s artefact."""
        return self.root / str(trial_id) / ARTIFACT_FOLDER

    def discard(self, trial_id: int) -> None:
        """Forget a trial's artefact (the trial failed, was stopped, or lost its lease)."""
        shutil.rmtree(self.root / str(trial_id), ignore_errors=True)

    def mark_ready(self, trial_id: int, token: str) -> None:
        """The trial's result was accepted: its artefact may be uploaded under ``token``."""
        folder = self.root / str(trial_id)
        if (folder / ARTIFACT_FOLDER).is_dir():
            (folder / LEASE_FILE).write_text(json.dumps({"trial_id": trial_id,
                                                         "token": token}))

    def pending(self) -> list[int]:
        """Trial ids ready to upload, oldest first; folders never marked are removed."""
        if not self.root.is_dir():
            return []
        ready = []
        for folder in sorted(self.root.iterdir(), key=lambda p: p.name):
            if not folder.is_dir() or not folder.name.isdigit():
                continue
            if (folder / LEASE_FILE).is_file():
                ready.append(int(folder.name))
            else:
                shutil.rmtree(folder, ignore_errors=True)
        return ready

    def upload(self, trial_id: int) -> bool:
        """Upload one ready artefact. True when done with it (stored, or refused for good:
        then logged and dropped); False when it stays for a later try.

        Raises:
            Interrupted: the worker is stopping (the artefact stays on disk).
        """
        folder = self.root / str(trial_id)
        lease = json.loads((folder / LEASE_FILE).read_text())
        try:
            data = pack(folder / ARTIFACT_FOLDER)
        except ArtifactError as error:
            log.error("artefact of trial %s is unusable, dropped: %s", trial_id, error)
            return self._drop(trial_id)
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            answer = self.client.upload_artifact(trial_id, lease["token"], data, sha256)
        except (LeaseLost, ProtocolError) as error:
            log.error("artefact of trial %s refused by the server, dropped: %s", trial_id, error)
            return self._drop(trial_id)
        log.info("artefact of trial %s uploaded (%d bytes, sha256 %s%s)", trial_id, len(data),
                 sha256[:12], ", already there" if answer.get("duplicate") else "")
        self.uploaded += 1
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def flush(self) -> None:
        """Upload every ready artefact (transient failures are retried with backoff inside
        ``upload``; a stop request leaves the rest on disk)."""
        for trial_id in self.pending():
            try:
                self.upload(trial_id)
            except Interrupted:
                log.info("stopping: %d artefact(s) left in %s for the next start",
                         len(self.pending()), self.root)
                return

    def _drop(self, trial_id: int) -> bool:
        self.dropped += 1
        self.discard(trial_id)
        return True
