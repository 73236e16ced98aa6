"""Scaled parallel adapter (He et al., ICLR 2022): Δh = s * f(x W_down) W_up beside a sublayer.

Config: ``autopeft_service.domain.peft_config.ParallelAdapterConfig``. It reads the
sublayer's input (FFN input at ``ffn``, attention input at ``attention``) and its scaled
output is added to the sublayer's projected output before residual and LayerNorm. W_up
starts at zero, so the model is unchanged at initialisation.
"""

from __future__ import annotations

from torch import nn

from autopeft_service.domain.peft_config import ParallelAdapterConfig
from workers.peft.arch import ArchitectureMapping
from workers.peft.bottleneck import Bottleneck
from workers.peft.serial_adapter import output_path
from workers.peft.sublayer import adapted_output


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: ParallelAdapterConfig,
           hidden: int) -> None:
    """Insert a parallel adapter of ``config.sizes[i]`` beside the sublayer of every layer i."""
    for layer, size in zip(mapping.layer_modules(backbone), config.sizes, strict=True):
        if size:
            adapted_output(layer, output_path(mapping, config.position)).add_parallel(
                Bottleneck(hidden, size, config.activation), config.scale)
