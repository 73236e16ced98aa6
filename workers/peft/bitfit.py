"""BitFit (Ben Zaken et al., ACL 2022): train only the bias terms of the chosen layers.

Config: ``autopeft_service.domain.peft_config.BitFitConfig``. Per chosen layer the biases
of query, key, value, attention output, FFN in, FFN out and both LayerNorms train:
7 * d + f parameters. BitFit adds no module; it unfreezes existing parameters, so it must
run after the backbone is frozen and before any module is wrapped.
"""

from __future__ import annotations

from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.peft_config import BitFitConfig
from workers.peft.arch import ArchitectureMapping
from workers.peft.registry import injector


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: BitFitConfig) -> None:
    """Set ``requires_grad`` on every bias inside each chosen layer."""
    for layer, chosen in zip(mapping.layer_modules(backbone), config.layers, strict=True):
        if chosen:
            for name, parameter in layer.named_parameters():
                if name.endswith("bias"):
                    parameter.requires_grad_(True)


@injector("bitfit", order=10)
def build(backbone: nn.Module, mapping: ArchitectureMapping, config: BitFitConfig | None,
          dims: BackboneDims) -> None:
    """Build ``PeftConfig.bitfit`` (first: it only unfreezes existing biases)."""
    if config is not None:
        inject(backbone, mapping, config)
