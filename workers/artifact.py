"""Write an adapter artefact after training, and load one back as a ready classifier.

The format is ``autopeft_service.domain.artifact`` (manifest + safetensors). Loading in two
lines::

    from workers.artifact import load_classifier
    classifier = load_classifier("path/to/minilm", "path/to/artifact")
    classifier.predict(["a gripping, funny film", "dull and far too long"])

A loaded classifier is the trial's model: the same backbone, the same PEFT modules built
from the manifest's configuration, the trained tensors put back, and the same tokenisation
and batching as the worker's scoring, so its predictions on dev are the worker's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autopeft_service.domain.artifact import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    ArtifactManifest,
    BackboneIdentity,
    TaskInfo,
    config_hash,
    file_sha256,
    read_manifest,
    verify_weights,
)
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import TrainingSettings, TrialResult, resolve_pooling
from workers.backbone import Backbone, load_backbone
from workers.data import Example, TaskData, TaskType, TokenizedSplit, tokenize_examples
from workers.folders import replace_folder
from workers.peft import apply_peft
from workers.task_model import CausalLMModel, TaskModel


def backbone_identity(backbone: Backbone) -> BackboneIdentity:
    """Name, type, config hash and dimensions of a loaded backbone."""
    config = backbone.model.config.to_dict()
    return BackboneIdentity(name=backbone.source, model_type=str(config.get("model_type", "")),
                            config_sha256=config_hash(config), dims=backbone.dims)


def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor of ``model`` by name, detached, contiguous, on the CPU."""
    return {name: parameter.detach().to("cpu").contiguous()
            for name, parameter in model.named_parameters() if parameter.requires_grad}


def save_artifact(directory: str | Path, model: TaskModel | CausalLMModel, backbone: Backbone,
                  config: PeftConfig, task: TaskData, settings: TrainingSettings,
                  result: TrialResult, trial: dict[str, Any] | None = None) -> ArtifactManifest:
    """Write the artefact of a trained model into ``directory`` (replaced whole: it is
    written beside it and renamed, so a reader never sees half of one).

    Args:
        directory: the artefact folder to create or replace.
        model: the trained task model.
        backbone: the backbone it was built on (its identity goes in the manifest).
        config: the PEFT configuration built into it.
        task: the task its head predicts.
        settings: the training settings.
        result: the trial's result (scores, counts, seed).
        trial: study and trial ids, when a worker trained it.

    Returns:
        The manifest written.
    """
    with replace_folder(directory) as staging:
        tensors = trained_tensors(model)
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        classifier = model if isinstance(model, TaskModel) else None  # else a CausalLMModel: no new head
        manifest = ArtifactManifest(
            peft_config=config, backbone=backbone_identity(backbone),
            task=TaskInfo(name=task.name, task_type=task.task_type.value,
                          label_names=list(task.label_names), metrics=list(task.metrics),
                          num_outputs=classifier.head.out_features if classifier is not None else 0),
            pooling=classifier.pooling if classifier is not None else "auto",  # resolved: mean/cls/last
            max_length=settings.max_length, settings=settings,
            seed=result.seed,
            metrics={"metric": result.metric, "objective": result.objective,
                     "held_out": result.held_out, "dev": result.dev,
                     "dev_score": result.dev_score},
            trainable_parameters=result.trainable_parameters,
            deployed_parameters=result.deployed_parameters,
            head_parameters=result.head_parameters, tensors=len(tensors),
            weights_sha256=file_sha256(staging / WEIGHTS_FILE), trial=trial)
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n",
                                             encoding="utf-8")
    return manifest


def tokenize_texts(tokenizer: Any, texts: Sequence[str | Sequence[str]], *, max_length: int,
                   task_type: TaskType | str) -> TokenizedSplit:
    """Texts (a string, or a pair of strings for a sentence-pair task) tokenised as the
    worker tokenises its data (same special tokens, pair layout, truncation, padding)."""
    kind = TaskType(task_type)
    examples = [Example(texts=(t,) if isinstance(t, str) else tuple(t),
                        label=0.0 if kind is TaskType.REGRESSION else 0) for t in texts]
    return tokenize_examples(tokenizer, examples, max_length=max_length, task_type=kind)


def batched_outputs(data: TokenizedSplit, batch_size: int,
                    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> torch.Tensor:
    """``forward`` over ``data`` in batches of ``batch_size`` rows (each trimmed to its
    longest row, as the worker scores), concatenated on the CPU as float32: (N, outputs),
    or an empty tensor for no rows. ``forward`` gets the batch without ``labels``."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data.batch(torch.arange(start, min(start + batch_size, len(data))))
            batch.pop("labels")
            chunks.append(forward(batch).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0)


@dataclass
class Classifier:
    """A trained adapter on its backbone, ready to predict.

    Attributes:
        model: the task model (eval mode).
        tokenizer: the backbone's tokenizer.
        manifest: the artefact's manifest.
        device: where the model runs.
    """

    model: TaskModel
    tokenizer: Any
    manifest: ArtifactManifest
    device: torch.device

    @property
    def is_regression(self) -> bool:
        return self.manifest.task.task_type == TaskType.REGRESSION.value

    def tokenize(self, texts: Sequence[str | Sequence[str]]) -> TokenizedSplit:
        """Texts (a string, or a pair for a sentence-pair task) as the worker tokenises."""
        return tokenize_texts(self.tokenizer, texts, max_length=self.manifest.max_length,
                              task_type=self.manifest.task.task_type)

    def outputs(self, data: TokenizedSplit) -> torch.Tensor:
        """Raw outputs, (N, classes) logits or (N,) values, batched as the worker scores."""
        self.model.eval()
        logits = batched_outputs(data, self.manifest.settings.eval_batch_size, lambda batch:
                                 self.model(**{k: v.to(self.device) for k, v in batch.items()}))
        return logits.squeeze(-1) if self.is_regression else logits

    def logits(self, texts: Sequence[str | Sequence[str]]) -> torch.Tensor:
        """Raw outputs for ``texts`` (see ``outputs``)."""
        return self.outputs(self.tokenize(texts))

    def predict(self, texts: Sequence[str | Sequence[str]]) -> list[str] | list[float]:
        """Label names (classification) or values (regression) for ``texts``."""
        outputs = self.logits(texts)
        if self.is_regression:
            return [float(v) for v in outputs]
        names = self.manifest.task.label_names
        return [names[i] if i < len(names) else str(i) for i in outputs.argmax(-1).tolist()]


def load_classifier(backbone: str | Path, artifact: str | Path,
                    device: str = "cpu") -> Classifier:
    """The classifier an artefact holds, on the backbone in ``backbone``.

    Args:
        backbone: the backbone folder (or hub name) the adapter was trained on.
        artifact: the artefact folder.
        device: torch device.

    Returns:
        The ready classifier (eval mode).

    Raises:
        ArtifactError: the artefact is incomplete or damaged, or the backbone's config hash
            differs from the manifest's (both named), or the tensors do not fit the model.
        ModelError: the backbone cannot be loaded.
    """
    manifest = read_manifest(artifact)
    if manifest.task.task_type == "causal_lm":
        raise ArtifactError(f"{artifact}: a causal-LM adapter (task {manifest.task.name}), not "
                            "a classifier: its weights are the adapter's tensors in "
                            f"{WEIGHTS_FILE}; loading it for generation is not built yet")
    weights = verify_weights(artifact, manifest)
    loaded = load_backbone(backbone)
    identity = backbone_identity(loaded)
    if identity.config_sha256 != manifest.backbone.config_sha256:
        raise ArtifactError(
            f"backbone {backbone}: config hash {identity.config_sha256} differs from the "
            f"artefact's {manifest.backbone.config_sha256} (trained on "
            f"{manifest.backbone.name}); load it on the backbone it was trained on")
    encoder = apply_peft(loaded.model, manifest.peft_config, loaded.dims)
    model = TaskModel(encoder, loaded.dims.hidden_size, manifest.task.num_outputs,
                      resolve_pooling(manifest.pooling, loaded.dims.is_decoder),
                      manifest.settings.head_dropout)
    expected = set(trained_tensors(model))
    state = load_file(str(weights))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ArtifactError(f"{weights}: its tensors do not fit the configuration "
                            f"(missing {missing[:3]}, unexpected {extra[:3]})")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a shape that differs
        raise ArtifactError(f"{weights}: {str(error).splitlines()[0]}") from None
    model.requires_grad_(False)
    model.to(torch.device(device)).eval()
    return Classifier(model=model, tokenizer=loaded.tokenizer, manifest=manifest,
                      device=torch.device(device))
