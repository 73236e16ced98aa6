"""Serial (sequential) bottleneck adapter in Houlsby et al.'s (2019) placement.

Config: ``autopeft_service.domain.peft_config.SerialAdapterConfig``. The adapter reads the
sublayer's projected output h (FFN output projection at ``ffn``, attention output
projection at ``attention``, after its dropout) and adds its output back to h **before**
the residual add and the LayerNorm: LayerNorm(h + adapter(h) + x) on a post-norm layer
(``sublayer.py``), h + adapter(h) before the residual add on a pre-norm one. This is also
He et al.'s sequential adapter; Pfeiffer et al.'s placement (adapter on the normed
LayerNorm(h + x), LayerNorm applied again), which AutoPEFT's released code uses, is not
built (``docs/papers.md``).
"""

from __future__ import annotations

from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.peft_config import Position, SerialAdapterConfig
from workers.peft.arch import ArchitectureMapping
from workers.peft.bottleneck import Bottleneck
from workers.peft.registry import injector
from workers.peft.sublayer import adapted_output


def output_path(mapping: ArchitectureMapping, position: Position) -> str:
    """The sublayer output an adapter at ``position`` attaches to."""
    return mapping.ffn_output if position is Position.FFN else mapping.attention_output


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: SerialAdapterConfig,
           hidden: int) -> None:
    """Insert a serial adapter of ``config.sizes[i]`` into every layer i with a non-zero size."""
    for layer, size in zip(mapping.layer_modules(backbone), config.sizes, strict=True):
        if size:
            adapted_output(layer, output_path(mapping, config.position), mapping.pre_norm).add_serial(
                Bottleneck(hidden, size, config.activation))


@injector("serial_adapters", order=40)
def build(backbone: nn.Module, mapping: ArchitectureMapping,
          config: tuple[SerialAdapterConfig, ...], dims: BackboneDims) -> None:
    """Build every serial adapter of ``PeftConfig.serial_adapters``."""
    for adapter in config:
        inject(backbone, mapping, adapter, dims.hidden_size)
