"""The adapter artefact: what one trained configuration leaves behind, as a folder.

Format ``autopeft-adapter`` version 1 (a folder; uploaded and downloaded as a zip of it):

    manifest.json         ArtifactManifest below (UTF-8 JSON)
    weights.safetensors   every tensor the trial trained, by its name in the trained
                          ``TaskModel``: the PEFT modules (``backbone.…``: LoRA's A and B,
                          adapters, prefixes, (IA)^3 vectors, BitFit's biases, the whole
                          encoder for full fine-tuning) and the task head (``head.…``)

The frozen backbone is not in it: a loader rebuilds the model from the backbone folder,
the manifest's ``peft_config`` and these tensors, and refuses a backbone whose config hash
differs from ``backbone.config_sha256``. A reader refuses a ``format_version`` it does not
know (never guesses).

This module is the contract only (pydantic, no torch), so the server and the client can
read a manifest; ``workers.artifact`` writes and loads artefacts.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import AutopeftError
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import Pooling, TrainingSettings

FORMAT: Final = "autopeft-adapter"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
#: The files of a format-1 artefact, nothing else.
ARTIFACT_FILES = (MANIFEST_FILE, WEIGHTS_FILE)
#: Keys of a HuggingFace config that say where or how a model was loaded, not what it is;
#: left out of the config hash so that a copy of the same backbone matches.
VOLATILE_CONFIG_KEYS = frozenset({
    "_name_or_path", "transformers_version", "_commit_hash", "_attn_implementation",
    "_attn_implementation_autoset", "attn_implementation", "torch_dtype", "dtype",
    "_attn_implementation_internal", "use_cache", "output_attentions",
    "output_hidden_states", "return_dict"})


class ArtifactError(AutopeftError, ValueError):
    """An artefact is missing, incomplete, corrupt, of an unknown format, or does not fit
    the backbone it is loaded on."""


class BackboneIdentity(BaseModel):
    """Which backbone the adapter was trained on."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The folder or hub name the trial loaded.")
    model_type: str = Field(description="The HF config's model_type, e.g. bert.")
    config_sha256: str = Field(description="config_hash() of the backbone's HF config.")
    dims: BackboneDims


class TaskInfo(BaseModel):
    """The task the head predicts (a causal-LM task: the decoder's own LM head, no new one)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    task_type: Literal["classification", "regression", "causal_lm"]
    label_names: list[str] = Field(description="Class index -> original label; [] for regression.")
    metrics: list[str]
    num_outputs: int = Field(ge=0, description="Outputs of the trained head; 0 for causal_lm.")


class ArtifactManifest(BaseModel):
    """``manifest.json`` of an artefact (format version 1)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["autopeft-adapter"] = FORMAT
    format_version: int = FORMAT_VERSION
    peft_config: PeftConfig
    backbone: BackboneIdentity
    task: TaskInfo
    pooling: Pooling
    max_length: int = Field(gt=1, description="Tokens per example at training and scoring.")
    settings: TrainingSettings
    seed: int
    metrics: dict[str, Any] = Field(
        description="The trial's scores: metric, objective, held_out, dev, dev_score.")
    trainable_parameters: int
    deployed_parameters: int
    head_parameters: int
    tensors: int = Field(description="Tensors in weights.safetensors.")
    weights_sha256: str = Field(description="SHA-256 of weights.safetensors.")
    trial: dict[str, Any] | None = Field(
        None, description="Study and trial ids when a worker trained it; None otherwise.")


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of a HuggingFace config dict without its volatile keys (canonical JSON)."""
    kept = {k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: str | Path) -> ArtifactManifest:
    """The manifest of the artefact folder ``directory``.

    Raises:
        ArtifactError: no folder or manifest, not JSON, another format or version, or a
            field that does not validate (named).
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory}: not an artefact folder (no {MANIFEST_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path}: unreadable: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an {FORMAT} manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {data.get('format_version')!r} is not "
                            f"supported (this version reads {FORMAT_VERSION})")
    try:
        return ArtifactManifest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{path}: {where}: {first['msg']}") from None


def verify_weights(directory: str | Path, manifest: ArtifactManifest) -> Path:
    """The weights file, after checking its SHA-256 against the manifest.

    Raises:
        ArtifactError: missing, or its hash differs (a damaged or altered file).
    """
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory}: {WEIGHTS_FILE} is missing")
    actual = file_sha256(path)
    if actual != manifest.weights_sha256:
        raise ArtifactError(f"{path}: SHA-256 {actual} differs from the manifest's "
                            f"{manifest.weights_sha256}: the file is damaged or was changed")
    return path


def pack(directory: str | Path) -> bytes:
    """The artefact folder as one zip (stored, not compressed: safetensors barely shrink),
    the form it travels in over HTTP. Only the format's files go in.

    Raises:
        ArtifactError: the folder is not a complete artefact.
    """
    manifest = read_manifest(directory)
    verify_weights(directory, manifest)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in ARTIFACT_FILES:
            archive.write(Path(directory) / name, name)
    return buffer.getvalue()


def unpack(data: bytes, directory: str | Path) -> ArtifactManifest:
    """Write a packed artefact into ``directory`` (created; must be empty or absent) and
    check it.

    Raises:
        ArtifactError: not a zip, other members than the format's files, the target is a
            non-empty folder, or the unpacked artefact does not check out.
    """
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ArtifactError(f"{target}: exists and is not an empty folder")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ArtifactError("not an artefact archive (not a zip file)") from None
    with archive:
        names = sorted(archive.namelist())
        if names != sorted(ARTIFACT_FILES):
            raise ArtifactError(f"artefact archive holds {names}, expected "
                                f"{sorted(ARTIFACT_FILES)}")
        target.mkdir(parents=True, exist_ok=True)
        for name in ARTIFACT_FILES:  # fixed names: no path from the archive is trusted
            (target / name).write_bytes(archive.read(name))
    manifest = read_manifest(target)
    verify_weights(target, manifest)
    return manifest
