"""Prefix tuning (Li & Liang, ACL 2021): learned key/value prefixes at self-attention.

Config: ``autopeft_service.domain.peft_config.PrefixConfig``. Layer i gets ``lengths[i]``
extra key/value positions that every query attends to (He et al.'s unified view: a
parallel modification at attention with a softmax "gate").

With reparameterisation a per-layer (length x d) embedding goes through one MLP shared by
all layers (d -> width -> 2d, tanh) that outputs the layer's keys and values; the MLP is
trainable and counted. ``PrefixEncoder.fold()`` replaces the MLP by its outputs after
training (2 * length * d numbers per layer: the deployed size).

The attention forward is re-implemented here (written by hand: transformers 5.x computes
keys inside ``BertSelfAttention.forward`` with no hook for extra positions). It calls the
same attention kernel the model is configured for (eager or SDPA) and extends the mask.
Decoders (Llama family, GPT-2) have their own forwards in ``prefix_decoder.py``: there the
prefix positions are visible to every query under the causal mask, and under grouped-query
attention a prefix has the key/value heads' width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.peft_config import PrefixConfig
from workers.peft.arch import ArchitectureMapping, get_submodule, set_submodule
from workers.peft.prefix_decoder import PREFIX_ATTENTIONS
from workers.peft.prefix_parts import PrefixEncoder, extend_mask
from workers.peft.registry import injector

if TYPE_CHECKING:
    from transformers import PreTrainedConfig

__all__ = ["PrefixEncoder", "PrefixSelfAttention", "build", "extend_mask", "inject"]


class _BertLikeSelfAttention(Protocol):
    """What ``PrefixSelfAttention`` reads of the attention it wraps (``BertSelfAttention``,
    ``RobertaSelfAttention``; projections are ``nn.Module``: possibly LoRA- or IA3-wrapped)."""

    @property
    def config(self) -> PreTrainedConfig: ...
    @property
    def attention_head_size(self) -> int: ...
    @property
    def scaling(self) -> float: ...
    @property
    def query(self) -> nn.Module: ...
    @property
    def key(self) -> nn.Module: ...
    @property
    def value(self) -> nn.Module: ...
    @property
    def dropout(self) -> nn.Dropout: ...


class PrefixSelfAttention(nn.Module):
    """A BERT-like self-attention whose keys and values are prefixed by learned positions."""

    _encoder: PrefixEncoder

    def __init__(self, base: _BertLikeSelfAttention, encoder: PrefixEncoder, layer: int) -> None:
        super().__init__()
        self.base = base
        self.layer = layer
        # A plain attribute, not a submodule: the encoder is registered once, on the backbone,
        # so its parameters are not counted or saved once per layer.
        object.__setattr__(self, "_encoder", encoder)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                past_key_values: object | None = None, **kwargs: object
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same contract as ``BertSelfAttention.forward`` (encoder use: no cache)."""
        base = self.base
        batch, length = hidden_states.shape[:2]
        head_shape = (batch, length, -1, base.attention_head_size)
        query = base.query(hidden_states).view(head_shape).transpose(1, 2)
        key = base.key(hidden_states).view(head_shape).transpose(1, 2)
        value = base.value(hidden_states).view(head_shape).transpose(1, 2)

        prefix_key, prefix_value = self._encoder.key_values(self.layer)
        prefix_length = prefix_key.shape[0]
        prefix_shape = (1, prefix_length, -1, base.attention_head_size)

        def to_heads(prefix: torch.Tensor) -> torch.Tensor:
            return prefix.view(prefix_shape).transpose(1, 2).expand(batch, -1, -1, -1)

        key = torch.cat([to_heads(prefix_key).to(key.dtype), key], dim=2)
        value = torch.cat([to_heads(prefix_value).to(value.dtype), value], dim=2)
        attention_mask = extend_mask(attention_mask, prefix_length)

        attention: Callable[..., tuple[torch.Tensor, torch.Tensor | None]] = (
            ALL_ATTENTION_FUNCTIONS.get_interface(base.config._attn_implementation,
                                                  eager_attention_forward))
        output, weights = attention(
            base, query, key, value, attention_mask,
            dropout=0.0 if not self.training else base.dropout.p,
            scaling=base.scaling, **kwargs)
        return output.reshape(batch, length, -1).contiguous(), weights


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: PrefixConfig,
           hidden: int, kv_size: int | None = None) -> PrefixEncoder | None:
    """Attach a PrefixEncoder to ``backbone`` and prefix every layer with a non-zero length.

    Args:
        kv_size: width of the keys (and values); ``hidden`` when None.

    Returns:
        The encoder (registered as ``backbone.prefix_encoder``), or None when all lengths
        are zero.
    """
    from workers.peft.sublayer import AdaptedPreNormSublayer

    if not any(config.lengths):
        return None
    encoder = PrefixEncoder(config, hidden, kv_size)
    backbone.prefix_encoder = encoder
    kind = PREFIX_ATTENTIONS.get(mapping.prefix_kind, PrefixSelfAttention)
    for index, (layer, length) in enumerate(
            zip(mapping.layer_modules(backbone), config.lengths, strict=True)):
        if not length:
            continue
        holder, name = layer, mapping.self_attention
        attention = get_submodule(layer, name)
        if isinstance(attention, AdaptedPreNormSublayer):  # pre-norm adapters wrap it
            holder, name = attention, "base"
            attention = attention.base
        set_submodule(holder, name, kind(attention, encoder, index))
    return encoder


@injector("prefix", order=60)
def build(backbone: nn.Module, mapping: ArchitectureMapping, config: PrefixConfig | None,
          dims: BackboneDims) -> None:
    """Build ``PeftConfig.prefix`` (last: it wraps the possibly wrapped attention)."""
    if config is not None:
        inject(backbone, mapping, config, dims.hidden_size, dims.kv_size)
