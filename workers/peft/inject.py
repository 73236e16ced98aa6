"""Build a PeftConfig into a backbone: freeze it, then run every method's injector in its
registered order (``workers/peft/registry.py``)."""

from __future__ import annotations

from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ModelError
from autopeft_service.domain.peft_config import PeftConfig
from workers.peft.arch import mapping_for
from workers.peft.registry import injectors


def apply_peft(backbone: nn.Module, config: PeftConfig, dims: BackboneDims) -> nn.Module:
    """Modify ``backbone`` in place so that exactly ``config``'s parameters train.

    Args:
        backbone: a freshly loaded HuggingFace backbone (``BertModel``, ``LlamaModel``,
            ``GPT2Model`` ...).
        config: the configuration; ``config.num_layers`` must match the backbone.
        dims: the backbone's dimensions.

    Returns:
        The same backbone object, modified.

    Raises:
        ModelError: unsupported architecture, a layer-count mismatch, or a method the
            architecture cannot hold (BitFit without biases, a projection it lacks).
    """
    mapping = mapping_for(backbone)
    layers = mapping.layer_modules(backbone)
    if len(layers) != config.num_layers:
        raise ModelError(f"num_layers: config is for {config.num_layers} layers, the backbone "
                         f"has {len(layers)}")
    backbone.requires_grad_(config.full_finetuning)
    for method in injectors():
        method.build(backbone, mapping, getattr(config, method.field), dims)
    return backbone


def trainable_parameter_count(module: nn.Module) -> int:
    """Elements of the distinct parameters of ``module`` that require gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
