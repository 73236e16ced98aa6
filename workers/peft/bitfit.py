"""BitFit (Ben Zaken et al., ACL 2022): train only the bias terms of the chosen layers.

Config: ``autopeft_service.domain.peft_config.BitFitConfig``. Per chosen layer every bias
of the layer trains (BERT, GPT-2: query, key, value, attention output, FFN in, FFN out and
both LayerNorms: 7 * d + f parameters; Qwen2: q, k, v). A layer with no bias (Llama) is
refused: BitFit would train nothing there. BitFit adds no module; it unfreezes existing parameters, so it must
run after the backbone is frozen and before any module is wrapped.
"""

from __future__ import annotations

from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ModelError
from autopeft_service.domain.peft_config import BitFitConfig
from workers.peft.arch import ArchitectureMapping
from workers.peft.registry import injector


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: BitFitConfig) -> None:
    """Set ``requires_grad`` on every bias inside each chosen layer.

    Raises:
        ModelError: a chosen layer has no bias.
    """
    for index, (layer, chosen) in enumerate(
            zip(mapping.layer_modules(backbone), config.layers, strict=True)):
        if not chosen:
            continue
        biases = [p for name, p in layer.named_parameters() if name.endswith("bias")]
        if not biases:
            raise ModelError(f"bitfit: layer {index} of this backbone has no bias terms, so "
                             "BitFit has nothing to train; choose another method")
        for parameter in biases:
            parameter.requires_grad_(True)


@injector("bitfit", order=10)
def build(backbone: nn.Module, mapping: ArchitectureMapping, config: BitFitConfig | None,
          dims: BackboneDims) -> None:
    """Build ``PeftConfig.bitfit`` (first: it only unfreezes existing biases)."""
    if config is not None:
        inject(backbone, mapping, config)
