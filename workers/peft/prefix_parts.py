"""The parts of prefix tuning that encoder and decoder attentions share: the encoder that
owns every prefix parameter, and the mask extension (``prefix.py`` attaches them to
encoders, ``prefix_decoder.py`` to decoders; both import from here, neither from the
other's module, so the two stay free of an import loop)."""

from __future__ import annotations

from typing import overload

import torch
from torch import nn

from autopeft_service.domain.peft_config import PrefixConfig

__all__ = ["PrefixEncoder", "extend_mask"]


class PrefixEncoder(nn.Module):
    """Produces each layer's prefix keys and values; owns every prefix parameter.

    Attributes:
        embeddings: layer index (as str) -> (length, d) with reparameterisation, else
            (length, 2d) keys and values directly.
        mlp: the shared reparameterising MLP, or None.
    """

    def __init__(self, config: PrefixConfig, hidden: int, kv_size: int | None = None) -> None:
        super().__init__()
        self.kv_size = hidden if kv_size is None else kv_size
        width = hidden if config.reparameterize else 2 * self.kv_size
        self.embeddings = nn.ParameterDict({
            str(i): nn.Parameter(torch.randn(length, width) * 0.02)
            for i, length in enumerate(config.lengths) if length
        })
        self.mlp: nn.Module | None = None
        if config.reparameterize:
            self.mlp = nn.Sequential(nn.Linear(hidden, config.mlp_width), nn.Tanh(),
                                     nn.Linear(config.mlp_width, 2 * self.kv_size))

    def key_values(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a layer's prefix, each (length, kv_size)."""
        prefix = self.embeddings[str(layer)]
        if self.mlp is not None:
            prefix = self.mlp(prefix)
        return prefix[:, : self.kv_size], prefix[:, self.kv_size:]

    @torch.no_grad()
    def fold(self) -> None:
        """Replace the MLP by its outputs (for deployment); a no-op without one."""
        if self.mlp is None:
            return
        folded = {name: nn.Parameter(self.mlp(p).detach().clone())
                  for name, p in self.embeddings.items()}
        self.mlp = None
        self.embeddings = nn.ParameterDict(folded)


@overload
def extend_mask(mask: torch.Tensor, prefix_length: int) -> torch.Tensor: ...


@overload
def extend_mask(mask: None, prefix_length: int) -> None: ...


@overload
def extend_mask(mask: torch.Tensor | None, prefix_length: int) -> torch.Tensor | None: ...


def extend_mask(mask: torch.Tensor | None, prefix_length: int) -> torch.Tensor | None:
    """Prepend ``prefix_length`` always-visible key positions to a 4-D attention mask.

    Boolean masks mark visible keys True; additive float masks mark them 0. ``None``
    (no padding anywhere) stays ``None``.
    """
    if mask is None:
        return None
    shape = (*mask.shape[:-1], prefix_length)
    if mask.dtype == torch.bool:
        visible = torch.ones(shape, dtype=torch.bool, device=mask.device)
    else:
        visible = torch.zeros(shape, dtype=mask.dtype, device=mask.device)
    return torch.cat([visible, mask], dim=-1)
