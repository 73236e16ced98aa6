"""A post-LN sublayer output with adapters: where serial and parallel adapters attach.

BERT-like sublayer outputs compute ``LayerNorm(dropout(dense(h)) + x)`` where ``x`` is the
sublayer's input (the residual). ``AdaptedSublayerOutput`` keeps the original module's
weights and inserts, before the residual and LayerNorm:
  * serial adapters: ``out <- out + adapter(out)`` (sequential form);
  * parallel adapters: ``out <- out + s * adapter(x)`` (parallel form, He et al. 2022).
The attribute names ``dense``, ``dropout`` and ``LayerNorm`` are the BERT/RoBERTa ones;
an architecture with other names needs its own wrapper (see ``arch.py``).
"""

from __future__ import annotations

import torch
from torch import nn


class AdaptedSublayerOutput(nn.Module):
    """Wraps a sublayer output module (dense, dropout, LayerNorm) and adds adapters."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.serial = nn.ModuleList()
        self.parallel = nn.ModuleList()
        self.parallel_scales: list[float] = []

    def add_serial(self, adapter: nn.Module) -> None:
        """Append a sequential adapter applied to the projected output."""
        self.serial.append(adapter)

    def add_parallel(self, adapter: nn.Module, scale: float) -> None:
        """Append a parallel adapter reading the sublayer input, its output scaled."""
        self.parallel.append(adapter)
        self.parallel_scales.append(scale)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        """Same contract as the wrapped module: (B, T, *) , (B, T, d) -> (B, T, d)."""
        out = self.base.dropout(self.base.dense(hidden_states))
        for adapter in self.serial:
            out = out + adapter(out)
        for adapter, scale in zip(self.parallel, self.parallel_scales, strict=True):
            out = out + scale * adapter(input_tensor)
        return self.base.LayerNorm(out + input_tensor)


def adapted_output(layer: nn.Module, path: str) -> AdaptedSublayerOutput:
    """The AdaptedSublayerOutput at ``path`` in ``layer``, wrapping the original on first use."""
    from workers.peft.arch import get_submodule, set_submodule

    module = get_submodule(layer, path)
    if not isinstance(module, AdaptedSublayerOutput):
        module = AdaptedSublayerOutput(module)
        set_submodule(layer, path, module)
    return module
