"""Training checkpoints for freeze-thaw continuation: pause a trial at a fidelity, resume it
later, on any worker, as if it had never stopped.

Format ``autopeft-checkpoint`` version 1 (a folder; travels as a tar of it):

    checkpoint.json   ``CheckpointManifest`` below (UTF-8 JSON): what the run was (backbone
                      dimensions and config hash, task fingerprint, PEFT configuration,
                      training settings, seed, held-out or not), where it stopped (step,
                      the full budget's total steps, fidelity, examples seen), the trainable
                      tensors' names in optimiser order, and the SHA-256 of every other file
    state.pt          ``torch.save`` of a dict of tensors, numbers and lists only (it loads
                      with ``torch.load(weights_only=True)``):
                      ``parameters``  every trainable tensor by its name in the task model
                                      (PEFT modules and the head; the whole model for full
                                      fine-tuning), on the CPU
                      ``optimizer``   the AdamW ``state_dict``
                      ``scheduler``   the LR scheduler's ``state_dict``
                      ``rng``         torch's CPU generator (dropout draws from it), CUDA's
                                      generators when CUDA is available, python ``random``
                                      and numpy's global state
                      ``data``        ``epoch_generator``: the batch-order generator's state
                                      at the start of the epoch the run stopped in;
                                      ``epoch_offset``: batches of that epoch already trained

Resuming replays the stopped epoch's permutation from ``epoch_generator`` and skips its
first ``epoch_offset`` batches, so the resumed run sees exactly the batches, dropout masks
and learning rates of one uninterrupted run (``workers.trial.TrialRunner.run``,
``TrialRequest.resume_from``). A reader refuses a ``format_version`` it does not know, a
file whose SHA-256 differs from the manifest's, and a checkpoint of another run
(``CheckpointIdentity``); every refusal is a ``CheckpointError``, a ``ConfigError``.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from autopeft_service.domain.artifact import file_sha256
from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import TrainingSettings
from workers.folders import replace_folder

FORMAT: Final = "autopeft-checkpoint"
FORMAT_VERSION = 1
MANIFEST_FILE = "checkpoint.json"
STATE_FILE = "state.pt"
#: The files of a format-1 checkpoint, nothing else.
CHECKPOINT_FILES = (MANIFEST_FILE, STATE_FILE)


class CheckpointError(ConfigError):
    """A checkpoint is missing, damaged, of an unknown format, or not one the request can
    resume (another run, or already at or past the requested stop step)."""


class CheckpointIdentity(BaseModel):
    """What must be equal for a checkpoint to be continued: everything that decides a run
    apart from how far it trains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone_dims: BackboneDims
    backbone_config_sha256: str = Field(description="workers.artifact.backbone_identity's "
                                        "config hash of the backbone.")
    task_fingerprint: str = Field(description="TaskData.fingerprint of the task's examples.")
    hold_out: bool = Field(description="TrialRequest.hold_out: which examples train.")
    config: PeftConfig
    settings: TrainingSettings
    seed: int


class CheckpointManifest(CheckpointIdentity):
    """``checkpoint.json`` (format version 1)."""

    format: Literal["autopeft-checkpoint"] = FORMAT
    format_version: int = FORMAT_VERSION
    step: int = Field(ge=1, description="Steps trained (the next run starts after it).")
    total_steps: int = Field(ge=1, description="Steps of the full budget (fidelity 1); the LR "
                             "schedule spans them.")
    fidelity: float = Field(gt=0, le=1, description="The fidelity the run trained to.")
    examples_seen: int = Field(ge=0, description="Training examples seen in all steps.")
    parameters: list[str] = Field(description="Trainable tensors' names, in optimiser order.")
    files: dict[str, str] = Field(description="SHA-256 of each file beside the manifest.")
    trial: dict[str, Any] | None = Field(
        None, description="Study and trial ids when a worker trained it; None otherwise.")


@dataclass
class TrainingState:
    """Where training stands, as ``save_checkpoint`` writes it and ``load_checkpoint`` reads
    it back (plain tensors and state dicts, on the CPU when loaded).

    Attributes:
        step: steps trained.
        total_steps: steps of the full budget.
        examples_seen: training examples seen in those steps.
        parameters: trainable tensors by name, in optimiser order.
        optimizer: the optimiser's ``state_dict``.
        scheduler: the LR scheduler's ``state_dict``.
        rng: ``capture_rng`` of the moment training stopped.
        epoch_generator: the batch-order generator's state at the start of the current epoch.
        epoch_offset: batches of the current epoch already trained.
    """

    step: int
    total_steps: int
    examples_seen: int
    parameters: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    epoch_generator: torch.Tensor
    epoch_offset: int


@dataclass
class Checkpoint:
    """A loaded, checked checkpoint."""

    manifest: CheckpointManifest
    state: TrainingState


def capture_rng() -> dict[str, Any]:
    """The global random states training may draw from, as tensors and numbers."""
    python_version, python_state, python_gauss = random.getstate()
    numpy_state = np.random.get_state()
    assert isinstance(numpy_state, tuple)  # legacy=True: ('MT19937', keys, pos, has_gauss, gauss)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python_version": python_version,
        "python_state": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": python_gauss,
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "numpy_has_gauss": int(numpy_state[3]),
        "numpy_gauss": float(numpy_state[4]),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    """Put back ``capture_rng``'s states (CUDA's only where this machine has as many
    devices; a checkpoint written on a GPU resumes on a CPU without them)."""
    torch.set_rng_state(states["torch"])
    random.setstate((int(states["python_version"]),
                     tuple(int(v) for v in states["python_state"].tolist()),
                     states["python_gauss"]))
    np.random.set_state(("MT19937", states["numpy_keys"].numpy().astype(np.uint32),
                         int(states["numpy_pos"]), int(states["numpy_has_gauss"]),
                         float(states["numpy_gauss"])))
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def trainable_names(model: nn.Module) -> list[str]:
    """Names of ``model``'s trainable tensors, in the order the optimiser gets them."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def save_checkpoint(folder: str | Path, identity: CheckpointIdentity, state: TrainingState,
                    fidelity: float, trial: dict[str, Any] | None = None) -> CheckpointManifest:
    """Write a checkpoint into ``folder`` (replaced whole: written beside it and renamed, so a
    reader never sees half of one).

    Args:
        folder: the checkpoint folder to create or replace.
        identity: what the run is.
        state: where its training stands.
        fidelity: the fidelity it trained to.
        trial: study and trial ids, when a worker trained it.

    Returns:
        The manifest written.
    """
    with replace_folder(folder) as staging:
        payload = {
            "parameters": {name: tensor.detach().to("cpu").contiguous()
                           for name, tensor in state.parameters.items()},
            "optimizer": _to_cpu(state.optimizer),
            "scheduler": state.scheduler,
            "rng": state.rng,
            "data": {"epoch_generator": state.epoch_generator.to("cpu"),
                     "epoch_offset": state.epoch_offset},
        }
        torch.save(payload, staging / STATE_FILE)
        manifest = CheckpointManifest(
            **identity.model_dump(), step=state.step, total_steps=state.total_steps,
            fidelity=fidelity, examples_seen=state.examples_seen,
            parameters=list(state.parameters), trial=trial,
            files={STATE_FILE: file_sha256(staging / STATE_FILE)})
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n",
                                             encoding="utf-8")
    return manifest


def read_manifest(folder: str | Path) -> CheckpointManifest:
    """The manifest of the checkpoint folder ``folder``, after checking every file's SHA-256.

    Raises:
        CheckpointError: no folder or manifest, not JSON, another format or version, a field
            that does not validate (named), a file missing, or a SHA-256 that differs.
    """
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"resume_from: {folder} is not a checkpoint folder "
                              f"(no {MANIFEST_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"resume_from: {path} is unreadable: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"resume_from: {path} is not an {FORMAT} manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"resume_from: {path}: format_version "
                              f"{data.get('format_version')!r} is not supported (this version "
                              f"reads {FORMAT_VERSION})")
    try:
        manifest = CheckpointManifest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(f"resume_from: {path}: {where}: {first['msg']}") from None
    if sorted(manifest.files) != [STATE_FILE]:
        raise CheckpointError(f"resume_from: {path} lists files {sorted(manifest.files)}, "
                              f"expected {[STATE_FILE]}")
    for name, expected in manifest.files.items():
        file = Path(folder) / name
        if not file.is_file():
            raise CheckpointError(f"resume_from: {file} is missing")
        actual = file_sha256(file)
        if actual != expected:
            raise CheckpointError(f"resume_from: {file}: SHA-256 {actual} differs from the "
                                  f"manifest's {expected}: the file is damaged or was changed")
    return manifest


def check_identity(manifest: CheckpointManifest, expected: CheckpointIdentity) -> None:
    """Refuse a checkpoint of another run, naming what differs.

    Raises:
        CheckpointError: ``resume_from: the checkpoint's <field> ... differs from ...``.
    """
    ours = manifest.model_dump(include=set(CheckpointIdentity.model_fields))
    theirs = expected.model_dump()
    for field in CheckpointIdentity.model_fields:
        if ours[field] == theirs[field]:
            continue
        if isinstance(ours[field], dict) and isinstance(theirs[field], dict):
            keys = sorted(k for k in set(ours[field]) | set(theirs[field])
                          if ours[field].get(k) != theirs[field].get(k))
            detail = "; ".join(f"{field}.{k}: checkpoint {ours[field].get(k)!r}, this trial "
                               f"{theirs[field].get(k)!r}" for k in keys)
        else:
            detail = f"{field}: checkpoint {ours[field]!r}, this trial {theirs[field]!r}"
        raise CheckpointError(f"resume_from: the checkpoint is of another run ({detail}); "
                              "a checkpoint resumes only the same model, task, config, "
                              "settings and seed")


def load_checkpoint(folder: str | Path, expected: CheckpointIdentity | None = None,
                    stop_step: int | None = None) -> Checkpoint:
    """A checkpoint, checked (files' SHA-256, and when given, its identity and step).

    Args:
        folder: the checkpoint folder.
        expected: the identity of the run that resumes it; a checkpoint of another run is
            refused.
        stop_step: the step the resuming run stops at; the checkpoint's step must be below.

    Returns:
        The manifest and the training state (tensors on the CPU).

    Raises:
        CheckpointError: see ``read_manifest`` and ``check_identity``; the checkpoint's step
            is at or past ``stop_step``; the state file does not load or lacks a part.
    """
    manifest = read_manifest(folder)
    if expected is not None:
        check_identity(manifest, expected)
    if stop_step is not None and manifest.step >= stop_step:
        raise CheckpointError(
            f"resume_from: the checkpoint is at step {manifest.step} (fidelity "
            f"{manifest.fidelity:g}), this trial stops at step {stop_step} of "
            f"{manifest.total_steps}: a resumed run must train past the checkpoint; ask for a "
            "higher fidelity")
    path = Path(folder) / STATE_FILE
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        data = payload["data"]
        state = TrainingState(
            step=manifest.step, total_steps=manifest.total_steps,
            examples_seen=manifest.examples_seen, parameters=dict(payload["parameters"]),
            optimizer=payload["optimizer"], scheduler=payload["scheduler"],
            rng=payload["rng"], epoch_generator=data["epoch_generator"],
            epoch_offset=int(data["epoch_offset"]))
    except Exception as error:  # noqa: BLE001 - any unreadable state is one refusal
        raise CheckpointError(f"resume_from: {path} does not load: "
                              f"{type(error).__name__}: {error}") from None
    if list(state.parameters) != manifest.parameters:
        raise CheckpointError(f"resume_from: {path}: its tensors are not the manifest's "
                              "parameters")
    return Checkpoint(manifest=manifest, state=state)


def restore_parameters(model: nn.Module, parameters: dict[str, torch.Tensor]) -> None:
    """Copy a checkpoint's tensors into ``model``'s trainable parameters (in place, so an
    optimiser built on them keeps them).

    Raises:
        CheckpointError: the names (or their order) or a shape differ from the model's.
    """
    names = trainable_names(model)
    if names != list(parameters):
        missing = sorted(set(names) - set(parameters))
        extra = sorted(set(parameters) - set(names))
        raise CheckpointError(f"resume_from: the checkpoint's tensors do not fit the built model "
                              f"(missing {missing[:3]}, unexpected {extra[:3]})")
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in parameters.items():
            if own[name].shape != tensor.shape:
                raise CheckpointError(f"resume_from: tensor {name} has shape "
                                      f"{tuple(tensor.shape)}, the model's is "
                                      f"{tuple(own[name].shape)}")
            own[name].copy_(tensor)


def pack_checkpoint(folder: str | Path) -> bytes:
    """The checkpoint folder as one uncompressed tar (the form it travels in through the
    artefact store), after checking it. Only the format's files go in, as plain files.

    Raises:
        CheckpointError: the folder is not a complete, intact checkpoint.
    """
    read_manifest(folder)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in CHECKPOINT_FILES:
            data = (Path(folder) / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack_checkpoint(data: bytes, folder: str | Path) -> CheckpointManifest:
    """Write a packed checkpoint into ``folder`` (replaced whole, as ``save_checkpoint``
    does) and check it.

    Nothing in the archive decides where a file goes: every member must be a plain file
    named by one of the format's file names (no absolute path, no ``..``, no folder, no
    link or device), each once; the bytes are written by this code, never extracted.

    Raises:
        CheckpointError: not a tar, an unsafe or unexpected member, or the unpacked
            checkpoint does not check out.
    """
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as error:
        raise CheckpointError(f"not a checkpoint archive (not a tar file: {error})") from None
    files: dict[str, bytes] = {}
    with archive:
        for member in archive.getmembers():
            name = member.name
            path = PurePosixPath(name)
            if path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts:
                raise CheckpointError(f"checkpoint archive member {name!r}: an absolute path "
                                      "or '..' is refused")
            if not member.isreg():
                raise CheckpointError(f"checkpoint archive member {name!r}: only plain files "
                                      "are allowed (no link, folder or device)")
            if name not in CHECKPOINT_FILES or name in files:
                raise CheckpointError(f"checkpoint archive member {name!r}: unexpected (the "
                                      f"format holds {list(CHECKPOINT_FILES)}, each once)")
            handle = archive.extractfile(member)
            assert handle is not None  # a regular file
            files[name] = handle.read()
    if sorted(files) != sorted(CHECKPOINT_FILES):
        raise CheckpointError(f"checkpoint archive holds {sorted(files)}, expected "
                              f"{sorted(CHECKPOINT_FILES)}")
    with replace_folder(folder) as staging:
        for name, content in files.items():
            (staging / name).write_bytes(content)
        manifest = read_manifest(staging)
    return manifest


def _to_cpu(value: Any) -> Any:
    """A state dict with every tensor moved to the CPU (nested dicts and lists kept)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(item) for item in value)
    return value
