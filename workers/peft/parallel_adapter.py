"""Scaled parallel adapter (He et al., ICLR 2022): Δh = s * f(x W_down) W_up beside a sublayer.

Config: ``autopeft_service.domain.peft_config.ParallelAdapterConfig``. It reads the
sublayer's input (FFN input at ``ffn``, attention input at ``attention``) and its scaled
output is added to the sublayer's projected output before residual and LayerNorm. W_up
starts at zero, so the model is unchanged at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.peft_config import ParallelAdapterConfig
from workers.peft.arch import ArchitectureMapping
from workers.peft.bottleneck import Bottleneck
from workers.peft.registry import injector
from workers.peft.serial_adapter import output_path
from workers.peft.sublayer import adapted_output


class LearnedScale(nn.Module):
    """``s * module(x)`` with s one trainable scalar starting at ``initial`` (He et al.'s
    learned-scale parallel adapter): one parameter per layer beside the adapter's own."""

    def __init__(self, module: nn.Module, initial: float) -> None:
        super().__init__()
        self.module = module
        self.scale = nn.Parameter(torch.tensor(float(initial)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., hidden)."""
        return self.scale * self.module(x)


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: ParallelAdapterConfig,
           hidden: int) -> None:
    """Insert a parallel adapter of ``config.sizes[i]`` beside the sublayer of every layer i."""
    for layer, size in zip(mapping.layer_modules(backbone), config.sizes, strict=True):
        if not size:
            continue
        adapter: nn.Module = Bottleneck(hidden, size, config.activation)
        output = adapted_output(layer, output_path(mapping, config.position), mapping.pre_norm)
        if config.learned_scale:
            output.add_parallel(LearnedScale(adapter, config.scale), 1.0)
        else:
            output.add_parallel(adapter, config.scale)


@injector("parallel_adapters", order=50)
def build(backbone: nn.Module, mapping: ArchitectureMapping,
          config: tuple[ParallelAdapterConfig, ...], dims: BackboneDims) -> None:
    """Build every parallel adapter of ``PeftConfig.parallel_adapters``."""
    for adapter in config:
        inject(backbone, mapping, adapter, dims.hidden_size)
