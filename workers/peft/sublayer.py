"""Where serial and parallel adapters attach: a post-norm sublayer output, or a whole
pre-norm sublayer.

BERT-like sublayer outputs compute ``LayerNorm(dropout(dense(h)) + x)`` where ``x`` is the
sublayer's input (the residual). ``AdaptedSublayerOutput`` keeps the original module's
weights and inserts, before the residual and LayerNorm:
  * serial adapters: ``out <- out + adapter(out)`` (sequential form);
  * parallel adapters: ``out <- out + s * adapter(x)`` (parallel form, He et al. 2022).
The attribute names ``dense``, ``dropout`` and ``LayerNorm`` are the BERT/RoBERTa ones.

Pre-norm layers (Llama family, GPT-2) compute ``h + sublayer(norm(h))``: there is no norm
after the sublayer, so ``AdaptedPreNormSublayer`` wraps the sublayer module (attention or
MLP) and adds, to its output and before the residual add, the same two forms, with ``x``
the normed input the sublayer reads.
"""

from __future__ import annotations

import torch
from torch import nn


class _AdapterHolder(nn.Module):
    """Serial and parallel adapters around a wrapped module (``base``)."""

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

    def adapt(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out`` with every serial adapter applied in turn, then every parallel adapter's
        scaled reading of the sublayer input ``x`` added."""
        for adapter in self.serial:
            out = out + adapter(out)
        for adapter, scale in zip(self.parallel, self.parallel_scales, strict=True):
            out = out + scale * adapter(x)
        return out


class AdaptedSublayerOutput(_AdapterHolder):
    """Wraps a post-norm sublayer output module (dense, dropout, LayerNorm) and adds adapters."""

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        """Same contract as the wrapped module: (B, T, *) , (B, T, d) -> (B, T, d)."""
        dense, dropout, norm = self.base.dense, self.base.dropout, self.base.LayerNorm
        # Submodules of the wrapped output (torch types a module attribute Tensor | Module).
        assert isinstance(dense, nn.Module) and isinstance(dropout, nn.Module)
        assert isinstance(norm, nn.Module)
        out = self.adapt(dropout(dense(hidden_states)), input_tensor)
        return norm(out + input_tensor)


class AdaptedPreNormSublayer(_AdapterHolder):
    """Wraps a pre-norm sublayer (attention or MLP) and adds adapters to its output.

    The wrapped module is called with the same arguments; its first positional argument or
    ``hidden_states`` keyword is the normed input ``x``. An attention module returns a tuple
    (output, weights): the output is adapted and the rest passed through.
    """

    def forward(self, *args: object, **kwargs: object) -> object:
        """Same contract as the wrapped module."""
        x = args[0] if args else kwargs["hidden_states"]
        assert isinstance(x, torch.Tensor)  # the normed hidden states
        result = self.base(*args, **kwargs)
        if isinstance(result, tuple):
            return (self.adapt(result[0], x), *result[1:])
        return self.adapt(result, x)


def adapted_output(layer: nn.Module, path: str,
                   pre_norm: bool = False) -> AdaptedSublayerOutput | AdaptedPreNormSublayer:
    """The adapter holder at ``path`` in ``layer``, wrapping the original on first use.

    Args:
        layer: one transformer layer.
        path: the post-norm sublayer output module, or the pre-norm sublayer.
        pre_norm: which of the two ``path`` is.
    """
    from workers.peft.arch import get_submodule, set_submodule

    module = get_submodule(layer, path)
    kind = AdaptedPreNormSublayer if pre_norm else AdaptedSublayerOutput
    if not isinstance(module, kind):
        module = kind(module)
        set_submodule(layer, path, module)
    return module
