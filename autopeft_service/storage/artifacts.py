"""Where the server keeps uploaded adapter artefacts (the bytes; the database keeps their
hash and size): a small interface, and a local folder behind it.

An upload is streamed to a staging file beside its final place and renamed when complete
and checked, so a reader never sees half an artefact and a failed upload leaves nothing
behind. Another backend (an object store) implements the same four methods.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class ArtifactStore(Protocol):
    """The bytes of each trial's artefact, by trial id."""

    def staging_file(self) -> Path:
        """A new empty file to stream an upload into (``commit`` or ``discard`` it)."""

    def commit(self, staged: Path, trial_id: int, sha256: str) -> None:
        """Keep ``staged`` as trial ``trial_id``'s artefact with hash ``sha256``."""

    def discard(self, staged: Path) -> None:
        """Remove a staging file that will not be committed."""

    def remove(self, trial_id: int, sha256: str) -> None:
        """Remove a committed artefact (one that lost a race to be recorded)."""

    def open(self, trial_id: int, sha256: str) -> Path | None:
        """The stored artefact's file, or None when there is none."""


class LocalArtifactStore:
    """Artefacts as ``<root>/<trial id % 1000>/<trial id>-<sha256>.zip`` (a thousand folders
    at most). The hash in the name means two uploads racing for one trial never overwrite
    each other: the database records one, the other is removed.

    Args:
        root: the folder (created on first use).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, trial_id: int, sha256: str) -> Path:
        return self.root / f"{trial_id % 1000:03d}" / f"{trial_id}-{sha256}.zip"

    def staging_file(self) -> Path:
        staging = self.root / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=staging, suffix=".zip.partial")
        os.close(handle)
        return Path(name)

    def commit(self, staged: Path, trial_id: int, sha256: str) -> None:
        target = self.path(trial_id, sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)

    def discard(self, staged: Path) -> None:
        staged.unlink(missing_ok=True)

    def remove(self, trial_id: int, sha256: str) -> None:
        self.path(trial_id, sha256).unlink(missing_ok=True)

    def open(self, trial_id: int, sha256: str) -> Path | None:
        path = self.path(trial_id, sha256)
        return path if path.is_file() else None


def read_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes in chunks of ``size`` (a download's body)."""
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk
