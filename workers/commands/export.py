"""``autopeft export``: turn an adapter artefact into another library's format.

    autopeft export ARTIFACT_DIR --format peft -o OUT

``peft``: a HuggingFace peft adapter folder (``PeftModel.from_pretrained``) plus the task
head, for LoRA (any per-layer ranks), (IA)^3 and prefix tuning with one length
(``workers.export``). A configuration peft cannot express is refused with one line naming
the part, exit 2; so are a missing or damaged artefact and a non-empty output folder.

The cheap checks (the folder, its manifest, the output folder) run before torch and peft
are imported (seconds), so a mistyped path is answered at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autopeft_service.cli.parser import USAGE_ERROR, fail

FORMATS = ("peft",)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``export``."""
    text = "export a trained adapter (artefact folder) to HuggingFace peft"
    parser = subparsers.add_parser("export", help=text, description=text)
    parser.add_argument("artifact", type=Path, metavar="ARTIFACT_DIR",
                        help="an artefact folder (autopeft download, trial --save, ...)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="target format")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                        help="folder to write (created; must be empty)")
    parser.set_defaults(handler=run)


def preflight(artifact: Path, output: Path) -> None:
    """The checks that need no torch: ``artifact`` is a folder with a readable manifest,
    ``output`` is absent or an empty folder (``workers.export.export_peft`` checks them
    again, and everything else).

    Raises:
        ArtifactError: the first check that fails, naming the path.
    """
    from autopeft_service.domain.artifact import ArtifactError, read_manifest

    if not artifact.is_dir():
        raise ArtifactError(f"{artifact}: no such artefact folder")
    read_manifest(artifact)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ArtifactError(f"{output}: exists and is not an empty folder")


def run(args: argparse.Namespace) -> int:
    """Export, or one line and exit 2."""
    from autopeft_service.domain.errors import AutopeftError

    try:
        preflight(args.artifact, args.output)
        from workers.export import export_peft  # torch, transformers: seconds

        files = export_peft(args.artifact, args.output)
    except AutopeftError as error:
        fail(f"export: {error}", USAGE_ERROR)
    print(f"wrote a peft adapter to {args.output}: {', '.join(files)}")
    print(f"load it: PeftModel.from_pretrained(AutoModel.from_pretrained(BACKBONE), "
          f"{str(args.output)!r}), or workers.export.load_peft_export(BACKBONE, "
          f"{str(args.output)!r}) for the head too")
    return 0
