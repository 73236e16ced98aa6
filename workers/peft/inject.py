"""Build a PeftConfig into a backbone: freeze it, then add each method in a fixed order.

Order matters because methods wrap modules: BitFit only flips ``requires_grad`` on
existing biases (before anything is wrapped); LoRA and (IA)^3 wrap linears; adapters wrap
sublayer outputs; prefix tuning wraps the self-attention module last (it calls the
possibly wrapped query/key/value linears).
"""

from __future__ import annotations

from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ModelError
from autopeft_service.domain.peft_config import PeftConfig
from workers.peft import bitfit, ia3, lora, parallel_adapter, prefix, serial_adapter
from workers.peft.arch import mapping_for


def apply_peft(backbone: nn.Module, config: PeftConfig, dims: BackboneDims) -> nn.Module:
    """Modify ``backbone`` in place so that exactly ``config``'s parameters train.

    Args:
        backbone: a freshly loaded HuggingFace encoder (e.g. ``BertModel``).
        config: the configuration; ``config.num_layers`` must match the backbone.
        dims: the backbone's dimensions.

    Returns:
        The same backbone object, modified.

    Raises:
        ModelError: unsupported architecture or a layer-count mismatch.
    """
    mapping = mapping_for(backbone)
    layers = mapping.layer_modules(backbone)
    if len(layers) != config.num_layers:
        raise ModelError(f"num_layers: config is for {config.num_layers} layers, the backbone "
                         f"has {len(layers)}")
    backbone.requires_grad_(config.full_finetuning)
    if config.bitfit is not None:
        bitfit.inject(backbone, mapping, config.bitfit)
    for lora_config in config.lora:
        lora.inject(backbone, mapping, lora_config)
    if config.ia3 is not None:
        ia3.inject(backbone, mapping, config.ia3, dims.hidden_size, dims.ffn_size)
    for adapter in config.serial_adapters:
        serial_adapter.inject(backbone, mapping, adapter, dims.hidden_size)
    for adapter in config.parallel_adapters:
        parallel_adapter.inject(backbone, mapping, adapter, dims.hidden_size)
    if config.prefix is not None:
        prefix.inject(backbone, mapping, config.prefix, dims.hidden_size)
    return backbone


def trainable_parameter_count(module: nn.Module) -> int:
    """Elements of the distinct parameters of ``module`` that require gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
