"""Analytic trainable-parameter count of a PeftConfig on a backbone.

The count is exact: it equals the number of trainable elements of the model a worker
builds, minus the task head (tested for every method). Each method's formula is stated in
its config's docstring in ``peft_config``.
"""

from __future__ import annotations

from dataclasses import dataclass

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.peft_config import IA3Target, LoraTarget, PeftConfig


@dataclass(frozen=True)
class ParameterCount:
    """Trainable parameters of a configuration, excluding the task head.

    Attributes:
        trainable: elements that receive gradients during training.
        deployed: elements stored per task after training (the prefix MLP folded away).
        by_method: trainable elements per method name.
        backbone_total: parameters of the backbone (share denominator).
    """

    trainable: int
    deployed: int
    by_method: dict[str, int]
    backbone_total: int

    @property
    def trainable_percent(self) -> float:
        """Trainable parameters as a percentage of the backbone."""
        return 100.0 * self.trainable / self.backbone_total

    @property
    def deployed_percent(self) -> float:
        """Deployed parameters as a percentage of the backbone."""
        return 100.0 * self.deployed / self.backbone_total


def lora_target_shape(target: LoraTarget, dims: BackboneDims) -> tuple[int, int]:
    """(in_features, out_features) of the projection a LoRA target adapts."""
    d, f = dims.hidden_size, dims.ffn_size
    if target is LoraTarget.FFN_IN:
        return d, f
    if target is LoraTarget.FFN_OUT:
        return f, d
    return d, d


def adapter_parameters(hidden: int, bottleneck: int) -> int:
    """Down (d x r + r) plus up (r x d + d) projection; 0 for an absent adapter."""
    return 0 if bottleneck == 0 else 2 * hidden * bottleneck + bottleneck + hidden


def prefix_mlp_parameters(hidden: int, width: int) -> int:
    """The shared reparameterising MLP: d -> width -> 2d with biases."""
    return hidden * width + width + width * 2 * hidden + 2 * hidden


def count_parameters(config: PeftConfig, dims: BackboneDims) -> ParameterCount:
    """Count the trainable (and deployed) parameters ``config`` adds to a backbone.

    Args:
        config: the PEFT configuration.
        dims: the backbone's dimensions.

    Returns:
        The exact counts, excluding the task head.

    Raises:
        ValueError: ``config.num_layers`` differs from ``dims.num_layers``.
    """
    if config.num_layers != dims.num_layers:
        raise ValueError(f"config is for {config.num_layers} layers, backbone has "
                         f"{dims.num_layers}")
    d, f = dims.hidden_size, dims.ffn_size
    by_method: dict[str, int] = {}
    deployed_adjust = 0
    if config.full_finetuning:
        by_method["full_finetuning"] = dims.total_parameters
    for adapter in config.serial_adapters:
        by_method[f"serial_adapter@{adapter.position.value}"] = sum(
            adapter_parameters(d, r) for r in adapter.sizes)
    for adapter in config.parallel_adapters:
        by_method[f"parallel_adapter@{adapter.position.value}"] = sum(
            adapter_parameters(d, r) + int(adapter.learned_scale) for r in adapter.sizes if r)
    if config.prefix is not None and any(config.prefix.lengths):
        tokens = sum(config.prefix.lengths)
        if config.prefix.reparameterize:
            trained = tokens * d + prefix_mlp_parameters(d, config.prefix.mlp_width)
            deployed_adjust = 2 * tokens * d - trained
        else:
            trained = 2 * tokens * d
        by_method["prefix"] = trained
    for lora in config.lora:
        per_rank = sum(sum(lora_target_shape(t, dims)) for t in lora.targets)
        by_method["lora"] = by_method.get("lora", 0) + per_rank * sum(lora.ranks)
    if config.bitfit is not None:
        by_method["bitfit"] = (7 * d + f) * sum(config.bitfit.layers)
    if config.ia3 is not None:
        widths = {IA3Target.KEY: d, IA3Target.VALUE: d, IA3Target.FFN: f}
        by_method["ia3"] = sum(widths[t] for t in config.ia3.targets) * sum(config.ia3.layers)
    trainable = sum(by_method.values())
    return ParameterCount(trainable=trainable, deployed=trainable + deployed_adjust,
                          by_method={k: v for k, v in by_method.items() if v},
                          backbone_total=dims.total_parameters)
