"""Export an adapter artefact to a HuggingFace ``peft`` adapter folder, and load one back.

Whether a configuration exports is decided by the method registry
(``domain.methods.export_refusal``): each ``MethodDescriptor.export`` is its peft form
(``PeftForm``: peft's type name and the condition a configuration must meet) or the reason
peft cannot hold it. This module holds the tensor conversion per peft form
(``CONVERTERS``); a method whose form has no converter here is refused by name too, so no
present method is ever left out of an export. Today three methods have a form:

* LoRA, with a rank (and scale) per layer and projection: ``rank_pattern`` and
  ``alpha_pattern`` keyed by each adapted module's full name (``target_modules`` is the
  exact set of those names), so any per-layer ranks survive;
* (IA)^3 with an explicit target pattern: keys and values rescaled at their projections'
  outputs, the FFN at ``output.dense``'s input (this engine rescales the intermediate
  activation: the same numbers);
* prefix tuning with one length in every layer: the folded prefix (the reparameterising
  MLP applied once) as peft's ``prompt_embeddings`` with ``prefix_projection=False``.

Everything else is refused with one line naming the part (``ExportRefused``): a method
whose descriptor declares no peft form (bottleneck adapters, serial or parallel; BitFit; any
new method until it declares one), full fine-tuning, a configuration that mixes methods
(peft holds one method per adapter), a configuration its form's condition refuses
(per-layer prefix lengths), and a head-only artefact.

The task head is not a peft module (peft's ``modules_to_save`` holds submodules of the base
model, and the head sits on top of a pooled ``AutoModel`` output): it is written beside the
adapter as ``autopeft_head.safetensors`` with ``autopeft_head.json`` (pooling, labels),
and ``load_peft_export`` puts the three together; its ``logits(texts)`` takes sentences (or
sentence pairs) like the artefact's classifier, ``logits_from_ids`` token ids.

``base_model_name_or_path`` names what peft can load: a packaged name (``minilm``) is
written as its local folder, a hub id as it is (``loadable_base``).

One difference to know for prefix tuning: peft runs a BERT-like encoder with the prefix as
its key/value cache, so the model numbers token positions from the prefix length on. This
engine's prefix does not shift token positions. ``load_peft_export`` passes position ids
that undo the shift (``position_offset`` in ``autopeft_head.json``); calling the peft model
without them gives slightly different outputs. peft's prefix tuning also drops
``token_type_ids``: for sentence pairs ``PeftExport`` folds the segment embeddings into
``inputs_embeds`` instead.

Written here, not taken from a library: no library maps this engine's modules to peft's
(the mapping is what this module is); peft's own config classes and file layout are used.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autopeft_service.domain.artifact import (
    ArtifactError,
    ArtifactManifest,
    read_manifest,
    verify_weights,
)
from autopeft_service.domain.errors import AutopeftError
from autopeft_service.domain.methods import export_method, export_refusal
from autopeft_service.domain.peft_config import IA3Target, PeftConfig
from workers.artifact import batched_outputs, tokenize_texts
from workers.data import TaskType, TokenizedSplit
from workers.models import resolve_model
from workers.peft.arch import ARCHITECTURES, ArchitectureMapping
from workers.peft.ia3 import target_path as ia3_output_path
from workers.peft.lora import target_path as lora_target_path
from workers.peft.prefix import PrefixEncoder
from workers.task_model import pool

if TYPE_CHECKING:
    from peft import PeftModel

HEAD_FILE = "autopeft_head.safetensors"
HEAD_CONFIG = "autopeft_head.json"
#: peft's prefix of the base model's module names in a saved adapter.
PEFT_PREFIX = "base_model.model."
#: The artefact's prefix of the backbone's module names.
ARTIFACT_PREFIX = "backbone."


class ExportRefused(AutopeftError, ValueError):
    """The configuration has a part peft cannot express (the message names it)."""


def refusal(config: PeftConfig) -> str | None:
    """Why peft cannot hold ``config`` (one line naming the part), or None when it can.

    The registry's ``export_refusal``, then the one method's peft form must have a
    converter here (``CONVERTERS``): a form without one is refused naming the method.
    """
    reason = export_refusal(config)
    if reason is not None:
        return reason
    method, form = export_method(config)
    if form.peft_type not in CONVERTERS:
        return (f"{method.label}: its peft form {form.peft_type} has no converter in "
                f"workers/export.py (known: {sorted(CONVERTERS)})")
    return None


def _mapping(manifest: ArtifactManifest) -> ArchitectureMapping:
    mapping = ARCHITECTURES.get(manifest.backbone.model_type)
    if mapping is None:
        raise ExportRefused(f"backbone model_type {manifest.backbone.model_type!r}: no module "
                            f"map for it (known: {sorted(ARCHITECTURES)})")
    return mapping


#: (manifest, the artefact's tensors, module map, base model) -> (peft config, weights).
Converter = Callable[[ArtifactManifest, Mapping[str, torch.Tensor], ArchitectureMapping, str],
                     tuple[Any, dict[str, torch.Tensor]]]


def _lora(manifest: ArtifactManifest, tensors: Mapping[str, torch.Tensor],
          mapping: ArchitectureMapping, base: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """LoRA with per-layer ranks and scales (``rank_pattern``, ``alpha_pattern``)."""
    from peft import LoraConfig as PeftLoraConfig

    config = manifest.peft_config.lora
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    dropout = max(module.dropout for module in config)
    weights = {}
    for module in config:
        for layer, rank in enumerate(module.ranks):
            if not rank:
                continue
            for target in module.targets:
                name = f"{mapping.layers}.{layer}.{lora_target_path(mapping, target)}"
                ranks[name] = rank
                alphas[name] = module.scaling(rank) * rank  # peft scales by alpha / r
                for part in ("lora_A", "lora_B"):
                    weights[f"{PEFT_PREFIX}{name}.{part}.weight"] = tensors[
                        f"{ARTIFACT_PREFIX}{name}.{part}"]
    names = sorted(ranks)
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    peft_config = PeftLoraConfig(
        # peft annotates lora_alpha int, but scales by alpha / r: a float alpha works as is
        r=r, lora_alpha=alphas[names[0]], lora_dropout=dropout, bias="none",  # type: ignore[arg-type]
        target_modules="|".join(_exact(name) for name in names),
        rank_pattern={_exact(n): ranks[n] for n in names},
        alpha_pattern={_exact(n): alphas[n] for n in names},
        task_type="FEATURE_EXTRACTION", base_model_name_or_path=base)
    return peft_config, weights


def _exact(name: str) -> str:
    """A regex that matches exactly the module name ``name``."""
    return name.replace(".", r"\.")


def _ia3(manifest: ArtifactManifest, tensors: Mapping[str, torch.Tensor],
         mapping: ArchitectureMapping, base: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """(IA)^3 with an explicit target pattern (the FFN at the output projection's input)."""
    from peft import IA3Config

    config = manifest.peft_config
    assert config.ia3 is not None
    targets: list[str] = []
    feedforward: list[str] = []
    weights = {}
    for layer, chosen in enumerate(config.ia3.layers):
        if not chosen:
            continue
        for target in config.ia3.targets:
            ours = f"{mapping.layers}.{layer}.{ia3_output_path(mapping, target)}"
            scale = tensors[f"{ARTIFACT_PREFIX}{ours}.ia3_scale"]
            if target is IA3Target.FFN:  # peft: the FFN output projection's input
                name = f"{mapping.layers}.{layer}.{mapping.ffn_output}.dense"
                feedforward.append(name)
                weights[f"{PEFT_PREFIX}{name}.ia3_l"] = scale.reshape(1, -1)
            else:  # peft: the projection's output
                name = ours
                weights[f"{PEFT_PREFIX}{name}.ia3_l"] = scale.reshape(-1, 1)
            targets.append(name)
    peft_config = IA3Config(
        target_modules="|".join(_exact(n) for n in sorted(targets)),
        feedforward_modules="|".join(_exact(n) for n in sorted(feedforward)) or None,
        task_type="FEATURE_EXTRACTION", base_model_name_or_path=base)
    return peft_config, weights


def _prefix(manifest: ArtifactManifest, tensors: Mapping[str, torch.Tensor],
            mapping: ArchitectureMapping, base: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """The folded prefix as peft's ``prompt_embeddings`` (one length in every layer)."""
    from peft import PrefixTuningConfig

    config = manifest.peft_config.prefix
    assert config is not None
    dims = manifest.backbone.dims
    encoder = PrefixEncoder(config, dims.hidden_size)
    prefix = "backbone.prefix_encoder."
    encoder.load_state_dict({k.removeprefix(prefix): v for k, v in tensors.items()
                             if k.startswith(prefix)}, strict=True)
    encoder.fold()  # keys and values themselves: (length, 2 * hidden) per layer
    with torch.no_grad():
        per_layer = [torch.cat(encoder.key_values(layer), dim=-1)
                     for layer in range(dims.num_layers)]
    # peft's layout per virtual token: [layer 0 key, layer 0 value, layer 1 key, ...]
    embeddings = torch.cat(per_layer, dim=-1).contiguous()
    peft_config = PrefixTuningConfig(
        num_virtual_tokens=config.lengths[0], num_layers=dims.num_layers,
        token_dim=dims.hidden_size, num_attention_heads=dims.num_heads,
        num_transformer_submodules=1, prefix_projection=False,
        task_type="FEATURE_EXTRACTION", base_model_name_or_path=base)
    return peft_config, {"prompt_embeddings": embeddings}


#: peft type (``PeftForm.peft_type`` of a method's descriptor) -> its tensor conversion.
CONVERTERS: dict[str, Converter] = {"LORA": _lora, "IA3": _ia3, "PREFIX_TUNING": _prefix}


def check_output_folder(output: Path) -> None:
    """Pass when ``output`` is absent or an empty folder.

    Raises:
        ArtifactError: it exists and is a file or a folder with something in it.
    """
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ArtifactError(f"{output}: exists and is not an empty folder")


def loadable_base(name: str) -> str:
    """The backbone as an adapter's ``base_model_name_or_path`` must name it for peft to
    load it: a packaged name (``minilm``, see ``workers.models.resolve_model``) becomes its
    local folder, an existing folder its absolute path; anything else (a hub id, or a
    folder no longer here) is kept as the artefact names it.

    Raises:
        ModelError: a packaged name whose package is not installed (the message says how).
    """
    resolved = resolve_model(name)
    local = Path(resolved).expanduser()
    return str(local.absolute()) if local.is_dir() else resolved


def export_peft(artifact: str | Path, output: str | Path) -> list[str]:
    """Write the artefact as a peft adapter folder (plus the head) into ``output``.

    Args:
        artifact: the artefact folder.
        output: the folder to write (created; must be empty or absent).

    The adapter config's ``base_model_name_or_path`` is ``loadable_base`` of the
    artefact's backbone: a folder or hub id peft can load (never a packaged alias).

    Returns:
        The names of the files written.

    Raises:
        ExportRefused: peft cannot express the configuration (the message names the part).
        ArtifactError: the artefact is incomplete or damaged, or ``output`` is not empty.
        ModelError: the backbone is a packaged name whose package is not installed.
    """
    manifest = read_manifest(artifact)
    if manifest.backbone.dims.is_decoder:
        raise ExportRefused(f"backbone {manifest.backbone.model_type}: export of decoder "
                            "adapters to peft is not built yet (the artefact's safetensors "
                            "hold the adapter)")
    reason = refusal(manifest.peft_config)
    if reason is not None:
        raise ExportRefused(reason)
    _, form = export_method(manifest.peft_config)
    mapping = _mapping(manifest)
    target = Path(output)
    check_output_folder(target)
    base = loadable_base(manifest.backbone.name)
    tensors = load_file(str(verify_weights(artifact, manifest)))
    config = manifest.peft_config
    peft_config, weights = CONVERTERS[form.peft_type](manifest, tensors, mapping, base)
    target.mkdir(parents=True, exist_ok=True)
    peft_config.save_pretrained(str(target))
    save_file({k: v.contiguous() for k, v in weights.items()},
              str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    save_file({"weight": tensors["head.weight"].contiguous(),
               "bias": tensors["head.bias"].contiguous()}, str(target / HEAD_FILE),
              metadata={"format": "pt"})
    offset = config.prefix.lengths[0] if config.prefix is not None else 0
    (target / HEAD_CONFIG).write_text(json.dumps({
        "pooling": manifest.pooling, "max_length": manifest.max_length,
        "eval_batch_size": manifest.settings.eval_batch_size,
        "task": manifest.task.model_dump(), "backbone": manifest.backbone.model_dump(),
        "position_offset": offset, "exported_from": manifest.model_dump(
            mode="json", include={"peft_config", "seed", "metrics"})}, indent=2) + "\n")
    return sorted(p.name for p in target.iterdir())


#: Rows per forward pass when an older export's head config does not say.
DEFAULT_BATCH_SIZE = 64


@dataclass
class PeftExport:
    """A peft adapter (loaded by ``PeftModel.from_pretrained``) with the exported head and
    the base model's tokenizer: ``logits(texts)`` gives what the artefact's classifier
    (``workers.artifact.Classifier.logits``) gives for the same texts."""

    model: PeftModel
    head: nn.Linear
    pooling: str
    position_offset: int
    tokenizer: Any
    max_length: int
    task_type: str
    batch_size: int = DEFAULT_BATCH_SIZE

    def tokenize(self, texts: Sequence[str | Sequence[str]]) -> TokenizedSplit:
        """Sentences (or pairs for a two-sentence task) as the worker tokenised them."""
        return tokenize_texts(self.tokenizer, texts, max_length=self.max_length,
                              task_type=self.task_type)

    def logits(self, texts: Sequence[str | Sequence[str]]) -> torch.Tensor:
        """Raw outputs for sentences (a ``str`` each, or a pair of ``str`` for a
        two-sentence task): (N, classes) logits, or (N,) values for regression."""
        outputs = batched_outputs(self.tokenize(texts), self.batch_size,
                                  lambda batch: self.logits_from_ids(**batch))
        return outputs.squeeze(-1) if self.task_type == TaskType.REGRESSION.value else outputs

    @torch.no_grad()
    def logits_from_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids, mask and segment ids -> (B, outputs), as this engine's model
        computes them (the head's raw outputs, regression not squeezed)."""
        kwargs: dict[str, Any] = {"input_ids": input_ids}
        if self.position_offset:  # see the module notes: undo peft's prefix position shift
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            kwargs["position_ids"] = (positions - self.position_offset).expand_as(input_ids)
            if token_type_ids is not None:  # peft drops them for prefix tuning
                embedded = self._embed_segments(input_ids, token_type_ids)
                if embedded is not None:
                    kwargs.update(input_ids=None, inputs_embeds=embedded)
        elif token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.model(attention_mask=attention_mask, **kwargs).last_hidden_state
        return self.head(pool(hidden, attention_mask, self.pooling))

    def _embed_segments(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor
                        ) -> torch.Tensor | None:
        """Word embeddings with the segments' type embeddings folded in (less segment 0's,
        which the model adds itself without ``token_type_ids``): peft's prefix tuning
        ignores ``token_type_ids``, so a sentence pair's second segment would read as the
        first. None when the model has no token type embeddings."""
        embeddings = getattr(self.model.get_base_model(), "embeddings", None)
        types = getattr(embeddings, "token_type_embeddings", None)
        if not isinstance(types, nn.Embedding):
            return None
        words = self.model.get_input_embeddings()
        return words(input_ids) + types(token_type_ids) - types(torch.zeros_like(token_type_ids))


def load_peft_export(backbone: str | Path, folder: str | Path) -> PeftExport:
    """An exported adapter on its backbone (a folder, hub id or packaged name such as
    ``minilm``): ``AutoModel`` + ``PeftModel.from_pretrained`` + the head + the backbone's
    tokenizer, in eval mode."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    meta = json.loads((Path(folder) / HEAD_CONFIG).read_text())
    location = loadable_base(str(backbone))
    base = AutoModel.from_pretrained(location, attn_implementation="sdpa")
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    head_state = load_file(str(Path(folder) / HEAD_FILE))
    head = nn.Linear(head_state["weight"].shape[1], head_state["weight"].shape[0])
    head.load_state_dict(head_state)
    return PeftExport(model=model, head=head.eval(), pooling=meta["pooling"],
                      position_offset=int(meta["position_offset"]),
                      tokenizer=AutoTokenizer.from_pretrained(location),
                      max_length=int(meta["max_length"]), task_type=meta["task"]["task_type"],
                      batch_size=int(meta.get("eval_batch_size", DEFAULT_BATCH_SIZE)))
