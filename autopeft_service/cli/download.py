"""``autopeft download``: fetch a trial's trained adapter (artefact folder) and say how to
load it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from autopeft_service.cli.parser import RUNTIME_ERROR, USAGE_ERROR, fail

if TYPE_CHECKING:
    from autopeft_service.client import AutopeftClient


def download(client: AutopeftClient, args: argparse.Namespace) -> int:
    """Download trial ``args.trial`` of study ``args.id`` into ``args.output``.

    Exits with one line: 2 when ``--output`` is not an empty folder, 1 when the artefact
    does not check out (the client's own errors are the runner's).
    """
    from autopeft_service.domain.artifact import ArtifactError

    try:
        manifest = client.download_artifact(args.id, args.trial, args.output)
    except ArtifactError as error:
        not_empty = "not an empty folder" in str(error)
        fail(f"--output: {error}" if not_empty else str(error),
             USAGE_ERROR if not_empty else RUNTIME_ERROR)
    metrics = manifest.metrics
    print(f"study {args.id} trial {args.trial}: {manifest.peft_config.describe()}; "
          f"{metrics['metric']} held-out {metrics['objective']:.4f}, dev "
          f"{metrics['dev_score']:.4f}; {manifest.deployed_parameters:,} deployed parameters "
          f"-> {args.output}")
    print(f"load it: from workers.artifact import load_classifier; "
          f"load_classifier({manifest.backbone.name!r}, {str(args.output)!r})")
    return 0
