"""Analytic trainable-parameter count of a PeftConfig on a backbone.

The count is exact: it equals the number of trainable elements of the model a worker
builds, minus the task head (tested for every method). Each method's formula is stated in
its config's docstring in ``peft_config`` and computed by its descriptor in ``methods``.
"""

from __future__ import annotations

from dataclasses import dataclass

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.methods import (
    adapter_parameters,
    lora_target_shape,
    method_counts,
    prefix_mlp_parameters,
)
from autopeft_service.domain.peft_config import PeftConfig

__all__ = ["ParameterCount", "adapter_parameters", "count_parameters", "lora_target_shape",
           "prefix_mlp_parameters"]


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


def count_parameters(config: PeftConfig, dims: BackboneDims) -> ParameterCount:
    """Count the trainable (and deployed) parameters ``config`` adds to a backbone.

    Each method's count is its descriptor's (``domain.methods``).

    Args:
        config: the PEFT configuration.
        dims: the backbone's dimensions.

    Returns:
        The exact counts, excluding the task head.

    Raises:
        ConfigError: ``config.num_layers`` differs from ``dims.num_layers``, or a method
            cannot apply to the backbone (BitFit without biases).
    """
    if config.num_layers != dims.num_layers:
        raise ConfigError(f"num_layers: config is for {config.num_layers} layers, backbone "
                          f"has {dims.num_layers}")
    counts = method_counts(config, dims)
    if config.full_finetuning:
        counts["full_finetuning"] = (dims.total_parameters, dims.total_parameters)
    trainable = sum(t for t, _ in counts.values())
    deployed = sum(d for _, d in counts.values())
    return ParameterCount(trainable=trainable, deployed=deployed,
                          by_method={k: t for k, (t, _) in counts.items() if t},
                          backbone_total=dims.total_parameters)
