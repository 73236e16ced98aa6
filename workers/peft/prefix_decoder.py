"""Prefix tuning on decoders: Llama-family and GPT-2 self-attention with learned prefixes.

Each forward re-implements its model's attention (written by hand for the same reason as
the encoder's in ``prefix.py``: transformers 5.x computes keys inside the module with no hook
for extra positions) and concatenates the layer's prefix keys and values before the
sequence's. Every query sees every prefix position (the prefix comes before the first
token, so the causal mask allows it); among the sequence's own positions the causal mask
and the padding mask apply as without a prefix.

Positions: the sequence keeps positions 0..T-1 (its rotary embedding is unchanged); the
prefix keys are learned directly in the rotated key space, so they carry no position. (HF
peft instead shifts the sequence to positions P..P+T-1; both are prefix tuning, the scores
differ.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.gpt2.modeling_gpt2 import eager_attention_forward as gpt2_eager
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
from transformers.models.llama.modeling_llama import eager_attention_forward as llama_eager

from workers.peft.prefix_parts import PrefixEncoder, extend_mask

if TYPE_CHECKING:
    from transformers import PreTrainedConfig


def causal_prefix_mask(mask: torch.Tensor | None, batch: int, length: int, prefix_length: int,
                       device: torch.device) -> torch.Tensor:
    """The 4-D mask of a causal sequence behind ``prefix_length`` always-visible positions.

    Args:
        mask: the model's mask for the sequence alone, ``(B, 1, T, T)`` boolean (True:
            visible) or additive float; None when the model relies on ``is_causal``
            (SDPA without padding): a boolean causal mask is built.
        batch, length: B and T.
        prefix_length: P.
        device: where to build a missing mask.

    Returns:
        ``(B, 1, T, P + T)``, boolean or additive as ``mask`` (boolean when it is None).
    """
    if mask is None:
        visible = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        mask = visible[None, None].expand(batch, 1, length, length)
    return extend_mask(mask, prefix_length)


class _DecoderAttention(Protocol):
    """What every prefixed decoder attention reads of the attention it wraps (projections
    are ``nn.Module``: possibly LoRA- or IA3-wrapped)."""

    @property
    def config(self) -> PreTrainedConfig: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def scaling(self) -> float: ...


class _LlamaLikeAttention(_DecoderAttention, Protocol):
    """``LlamaAttention`` (Mistral, Qwen2, Qwen3: same attributes; Qwen3 adds ``q_norm`` and
    ``k_norm``, looked up with ``hasattr``)."""

    @property
    def q_proj(self) -> nn.Module: ...
    @property
    def k_proj(self) -> nn.Module: ...
    @property
    def v_proj(self) -> nn.Module: ...
    @property
    def o_proj(self) -> nn.Module: ...
    @property
    def attention_dropout(self) -> float: ...


class _GPT2LikeAttention(_DecoderAttention, Protocol):
    """``GPT2Attention`` (self-attention: the fused ``c_attn``)."""

    @property
    def c_attn(self) -> nn.Module: ...
    @property
    def c_proj(self) -> nn.Module: ...
    @property
    def split_size(self) -> int: ...
    @property
    def attn_dropout(self) -> nn.Dropout: ...
    @property
    def resid_dropout(self) -> nn.Module: ...


_Attention = TypeVar("_Attention", bound=_DecoderAttention)


class _PrefixDecoderAttention(nn.Module, Generic[_Attention]):
    """Shared parts: the wrapped attention, the encoder, the kernel and the prefix heads."""

    eager: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
    _encoder: PrefixEncoder

    def __init__(self, base: _Attention, encoder: PrefixEncoder, layer: int) -> None:
        super().__init__()
        self.base = base
        self.layer = layer
        # A plain attribute, not a submodule: the encoder is registered once, on the backbone.
        object.__setattr__(self, "_encoder", encoder)

    def _kernel(self) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
        return ALL_ATTENTION_FUNCTIONS.get_interface(
            self.base.config._attn_implementation, type(self).eager)

    def _with_prefix(self, key: torch.Tensor, value: torch.Tensor, head_dim: int,
                     mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys, values (B, heads_kv, P + T, head_dim) and the mask (B, 1, T, P + T)."""
        batch, _, length, _ = key.shape
        prefix_key, prefix_value = self._encoder.key_values(self.layer)
        prefix_length = prefix_key.shape[0]

        def to_heads(prefix: torch.Tensor) -> torch.Tensor:
            heads = prefix.view(1, prefix_length, -1, head_dim).transpose(1, 2)
            return heads.expand(batch, -1, -1, -1).to(key.dtype)

        key = torch.cat([to_heads(prefix_key), key], dim=2)
        value = torch.cat([to_heads(prefix_value), value], dim=2)
        full = causal_prefix_mask(mask, batch, length, prefix_length, key.device)
        eager = self.base.config._attn_implementation == "eager"
        if eager and full.dtype == torch.bool:  # the eager kernel adds its mask
            full = torch.zeros(full.shape, dtype=key.dtype, device=key.device).masked_fill(
                ~full, torch.finfo(key.dtype).min)
        return key, value, full


class PrefixLlamaAttention(_PrefixDecoderAttention[_LlamaLikeAttention]):
    """``LlamaAttention`` (and Mistral, Qwen2, Qwen3) with a learned key/value prefix."""

    eager = staticmethod(llama_eager)

    def forward(self, hidden_states: torch.Tensor,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                attention_mask: torch.Tensor | None = None, past_key_values: Any = None,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same contract as ``LlamaAttention.forward`` (training use: no cache)."""
        base = self.base
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, base.head_dim)
        query = base.q_proj(hidden_states).view(hidden_shape)
        key = base.k_proj(hidden_states).view(hidden_shape)
        if hasattr(base, "q_norm") and hasattr(base, "k_norm"):  # Qwen3: per-head norms
            query, key = base.q_norm(query), base.k_norm(key)
        query, key = query.transpose(1, 2), key.transpose(1, 2)
        value = base.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        assert position_embeddings is not None
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        key, value, mask = self._with_prefix(key, value, base.head_dim, attention_mask)
        output, weights = self._kernel()(
            base, query, key, value, mask,
            dropout=0.0 if not self.training else base.attention_dropout,
            scaling=base.scaling, **kwargs)
        output = output.reshape(*input_shape, -1).contiguous()
        return base.o_proj(output), weights


class PrefixGPT2Attention(_PrefixDecoderAttention[_GPT2LikeAttention]):
    """``GPT2Attention`` (self-attention) with a learned key/value prefix."""

    eager = staticmethod(gpt2_eager)

    def forward(self, hidden_states: torch.Tensor, past_key_values: Any = None,
                attention_mask: torch.Tensor | None = None, **kwargs: Any
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same contract as ``GPT2Attention.forward`` for self-attention (no cache)."""
        base = self.base
        kwargs.pop("use_cache", None)
        kwargs.pop("output_attentions", None)
        query, key, value = base.c_attn(hidden_states).split(base.split_size, dim=2)
        shape = (*hidden_states.shape[:-1], -1, base.head_dim)
        query, key, value = (t.view(shape).transpose(1, 2) for t in (query, key, value))
        key, value, mask = self._with_prefix(key, value, base.head_dim, attention_mask)
        output, weights = self._kernel()(
            base, query, key, value, mask,
            dropout=base.attn_dropout.p if self.training else 0.0, scaling=base.scaling,
            **kwargs)
        output = output.reshape(*output.shape[:-2], -1).contiguous()
        return base.resid_dropout(base.c_proj(output)), weights


#: ``ArchitectureMapping.prefix_kind`` -> the prefixed attention (``bert``: prefix.py's own).
PREFIX_ATTENTIONS: dict[str, type[nn.Module]] = {
    "llama": PrefixLlamaAttention, "gpt2": PrefixGPT2Attention}
