"""Replacing a folder whole: written beside it, then renamed into place, so a reader never
sees half of one and a failed write leaves the old folder (or none) and no staging folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replace_folder(folder: str | Path) -> Iterator[Path]:
    """A new, empty staging folder beside ``folder`` to write the replacement into; when the
    block ends without an exception it becomes ``folder`` (an old ``folder`` is first
    renamed aside, then deleted), and when the block raises it is deleted and ``folder`` is
    left as it was.

    Args:
        folder: the folder to create or replace (its parent is created when missing).

    Yields:
        The staging folder (a hidden ``.<name>.*`` sibling of ``folder``).

    Raises:
        Whatever the block raises (after removing the staging folder); OSError when a
        folder cannot be created or renamed.
    """
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                            dir=target.parent))
            os.replace(target, retired / "folder")
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(retired / "folder", target)  # put the old one back
                shutil.rmtree(retired, ignore_errors=True)
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
