"""Export an adapter artefact to a HuggingFace ``peft`` adapter folder, and load one back.

peft can express three of this engine's methods on their own:

* LoRA, with a rank (and scale) per layer and projection: ``rank_pattern`` and
  ``alpha_pattern`` keyed by each adapted module's full name (``target_modules`` is the
  exact set of those names), so any per-layer ranks survive;
* (IA)^3 with an explicit target pattern: keys and values rescaled at their projections'
  outputs, the FFN at ``output.dense``'s input (this engine rescales the intermediate
  activation: the same numbers);
* prefix tuning with one length in every layer: the folded prefix (the reparameterising
  MLP applied once) as peft's ``prompt_embeddings`` with ``prefix_projection=False``.

Everything else is refused with one line naming the part (``ExportRefused``): bottleneck
adapters (serial or parallel), BitFit, full fine-tuning, a configuration that mixes methods
(peft holds one method per adapter), per-layer prefix lengths, and a head-only artefact.

The task head is not a peft module (peft's ``modules_to_save`` holds submodules of the base
model, and the head sits on top of a pooled ``AutoModel`` output): it is written beside the
adapter as ``autopeft_head.safetensors`` with ``autopeft_head.json`` (pooling, labels),
and ``load_peft_export`` puts the three together.

One difference to know for prefix tuning: peft runs a BERT-like encoder with the prefix as
its key/value cache, so the model numbers token positions from the prefix length on. This
engine's prefix does not shift token positions. ``load_peft_export`` passes position ids
that undo the shift (``position_offset`` in ``autopeft_head.json``); calling the peft model
without them gives slightly different outputs.

Written here, not taken from a library: no library maps this engine's modules to peft's
(the mapping is what this module is); peft's own config classes and file layout are used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from autopeft_service.domain.peft_config import IA3Target, LoraConfig, PeftConfig
from workers.peft.arch import ARCHITECTURES, ArchitectureMapping
from workers.peft.ia3 import target_path as ia3_output_path
from workers.peft.lora import target_path as lora_target_path
from workers.peft.prefix import PrefixEncoder
from workers.task_model import pool

HEAD_FILE = "autopeft_head.safetensors"
HEAD_CONFIG = "autopeft_head.json"
#: peft's prefix of the base model's module names in a saved adapter.
PEFT_PREFIX = "base_model.model."
#: The artefact's prefix of the backbone's module names.
ARTIFACT_PREFIX = "backbone."


class ExportRefused(AutopeftError, ValueError):
    """The configuration has a part peft cannot express (the message names it)."""


def refusal(config: PeftConfig) -> str | None:
    """Why peft cannot hold ``config`` (one line naming the part), or None when it can."""
    if config.full_finetuning:
        return ("full fine-tuning: not an adapter (every backbone weight changed); use the "
                "artefact's weights directly")
    if config.serial_adapters:
        return "serial adapters: bottleneck adapters have no peft form"
    if config.parallel_adapters:
        return "parallel adapters: bottleneck adapters have no peft form"
    if config.bitfit is not None:
        return "BitFit: peft has no bias-only method"
    methods = [name for name, present in (("LoRA", bool(config.lora)),
                                          ("(IA)^3", config.ia3 is not None),
                                          ("prefix", config.prefix is not None)) if present]
    if not methods:
        return ("no PEFT module (head only): nothing for peft to hold; the head is in the "
                "artefact")
    if len(methods) > 1:
        return (f"a mixture ({' + '.join(methods)}): peft holds one method per adapter; "
                "export a configuration with one method")
    if config.prefix is not None and len(set(config.prefix.lengths)) > 1:
        return (f"prefix: per-layer lengths {list(config.prefix.lengths)}: peft prefix "
                "tuning has one length for every layer")
    if config.lora:
        seen: set[str] = set()
        for module in config.lora:
            for target in module.targets:
                if target.value in seen:
                    return (f"LoRA: two modules adapt {target.value}: peft holds one LoRA "
                            "per projection")
                seen.add(target.value)
    return None


def _mapping(manifest: ArtifactManifest) -> ArchitectureMapping:
    mapping = ARCHITECTURES.get(manifest.backbone.model_type)
    if mapping is None:
        raise ExportRefused(f"backbone model_type {manifest.backbone.model_type!r}: no module "
                            f"map for it (known: {sorted(ARCHITECTURES)})")
    return mapping


def _lora(config: tuple[LoraConfig, ...], tensors: Mapping[str, torch.Tensor],
          mapping: ArchitectureMapping, base: str) -> tuple[Any, dict[str, torch.Tensor]]:
    from peft import LoraConfig as PeftLoraConfig

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
        r=r, lora_alpha=alphas[names[0]], lora_dropout=dropout, bias="none",
        target_modules="|".join(_exact(name) for name in names),
        rank_pattern={_exact(n): ranks[n] for n in names},
        alpha_pattern={_exact(n): alphas[n] for n in names},
        task_type="FEATURE_EXTRACTION", base_model_name_or_path=base)
    return peft_config, weights


def _exact(name: str) -> str:
    """A regex that matches exactly the module name ``name``."""
    return name.replace(".", r"\.")


def _ia3(config: PeftConfig, tensors: Mapping[str, torch.Tensor],
         mapping: ArchitectureMapping, base: str) -> tuple[Any, dict[str, torch.Tensor]]:
    from peft import IA3Config

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
            base: str) -> tuple[Any, dict[str, torch.Tensor]]:
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


def export_peft(artifact: str | Path, output: str | Path) -> list[str]:
    """Write the artefact as a peft adapter folder (plus the head) into ``output``.

    Args:
        artifact: the artefact folder.
        output: the folder to write (created; must be empty or absent).

    Returns:
        The names of the files written.

    Raises:
        ExportRefused: peft cannot express the configuration (the message names the part).
        ArtifactError: the artefact is incomplete or damaged, or ``output`` is not empty.
    """
    manifest = read_manifest(artifact)
    if manifest.backbone.dims.is_decoder:
        raise ExportRefused(f"backbone {manifest.backbone.model_type}: export of decoder "
                            "adapters to peft is not built yet (the artefact's safetensors "
                            "hold the adapter)")
    reason = refusal(manifest.peft_config)
    if reason is not None:
        raise ExportRefused(reason)
    mapping = _mapping(manifest)
    tensors = load_file(str(verify_weights(artifact, manifest)))
    target = Path(output)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ArtifactError(f"{target}: exists and is not an empty folder")
    config = manifest.peft_config
    base = manifest.backbone.name
    if config.lora:
        peft_config, weights = _lora(config.lora, tensors, mapping, base)
    elif config.ia3 is not None:
        peft_config, weights = _ia3(config, tensors, mapping, base)
    else:
        peft_config, weights = _prefix(manifest, tensors, base)
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
        "task": manifest.task.model_dump(), "backbone": manifest.backbone.model_dump(),
        "position_offset": offset, "exported_from": manifest.model_dump(
            mode="json", include={"peft_config", "seed", "metrics"})}, indent=2) + "\n")
    return sorted(p.name for p in target.iterdir())


@dataclass
class PeftExport:
    """A peft adapter (loaded by ``PeftModel.from_pretrained``) with the exported head."""

    model: nn.Module
    head: nn.Linear
    pooling: str
    position_offset: int

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids and mask -> (B, outputs), as this engine's model computes them."""
        kwargs: dict[str, Any] = {}
        if self.position_offset:  # see the module notes: undo peft's prefix position shift
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            kwargs["position_ids"] = (positions - self.position_offset).expand_as(input_ids)
        elif token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            **kwargs).last_hidden_state
        return self.head(pool(hidden, attention_mask, self.pooling))


def load_peft_export(backbone: str | Path, folder: str | Path) -> PeftExport:
    """An exported adapter on its backbone: ``AutoModel`` + ``PeftModel.from_pretrained``
    + the head, in eval mode."""
    from peft import PeftModel
    from transformers import AutoModel

    meta = json.loads((Path(folder) / HEAD_CONFIG).read_text())
    base = AutoModel.from_pretrained(str(backbone), attn_implementation="sdpa")
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    head_state = load_file(str(Path(folder) / HEAD_FILE))
    head = nn.Linear(head_state["weight"].shape[1], head_state["weight"].shape[0])
    head.load_state_dict(head_state)
    return PeftExport(model=model, head=head.eval(), pooling=meta["pooling"],
                      position_offset=int(meta["position_offset"]))
