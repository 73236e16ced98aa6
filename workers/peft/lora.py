"""LoRA (Hu et al., ICLR 2022): y = W x + (alpha / r) * B A x, with B = 0 at initialisation.

Config: ``autopeft_service.domain.peft_config.LoraConfig`` (rank per layer, targets).
In He et al.'s unified view LoRA is a parallel, linear modification of W_q / W_v.
Initialisation follows huggingface/peft: A ~ kaiming-uniform(a=sqrt(5)), B = 0.
A target that is one part of a fused projection (GPT-2's q/k/v in ``c_attn``) adds its
update to that part of the output only, so its count is the same as for a separate one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.peft_config import LoraConfig, LoraTarget
from workers.peft.arch import (
    ArchitectureMapping,
    Projection,
    get_submodule,
    linear_shape,
    replace_part,
    set_submodule,
)
from workers.peft.registry import injector


class LoraLinear(nn.Module):
    """A frozen projection plus a trainable low-rank update of rank ``rank``, times ``scaling``.

    Args:
        base: an ``nn.Linear``, a GPT-2 ``Conv1D``, or a wrapper of one.
        rank, scaling, dropout: the update's rank, scale alpha/r and input dropout.
        out_slice: the update covers output ``[start, end)`` only (one part of a fused
            projection); None: the whole output.

    Raises:
        TypeError: ``base`` is not a linear projection.
    """

    def __init__(self, base: nn.Module, rank: int, scaling: float, dropout: float = 0.0,
                 out_slice: tuple[int, int] | None = None) -> None:
        super().__init__()
        in_features, out_features = linear_shape(base)
        self.base = base
        self.out_slice = out_slice
        width = out_features if out_slice is None else out_slice[1] - out_slice[0]
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(width, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        update = (self.dropout(x) @ self.lora_A.t()) @ self.lora_B.t() * self.scaling
        out = self.base(x)
        if self.out_slice is None:
            return out + update
        start, end = self.out_slice
        return replace_part(out, self.out_slice, out[..., start:end] + update)


def target_path(mapping: ArchitectureMapping, target: LoraTarget) -> str:
    """Path, within a layer, of the projection a LoRA target adapts.

    Raises:
        ModelError: the architecture has no such projection.
    """
    return mapping.projection(target.value).path


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: LoraConfig) -> None:
    """Wrap each target projection of every layer with a non-zero rank in a LoraLinear."""
    for layer, rank in zip(mapping.layer_modules(backbone), config.ranks, strict=True):
        if not rank:
            continue
        for target in config.targets:
            projection: Projection = mapping.projection(target.value)
            base = get_submodule(layer, projection.path)
            try:
                out_slice = projection.out_slice(linear_shape(base)[1] // projection.parts)
            except TypeError:
                raise TypeError(f"LoRA target {projection.path} is {type(base).__name__}, "
                                "not a linear projection") from None
            set_submodule(layer, projection.path, LoraLinear(
                base, rank, config.scaling(rank), config.dropout, out_slice))


@injector("lora", order=20)
def build(backbone: nn.Module, mapping: ArchitectureMapping, config: tuple[LoraConfig, ...],
          dims: BackboneDims) -> None:
    """Build every LoRA module of ``PeftConfig.lora`` (each on its own projections)."""
    for module in config:
        inject(backbone, mapping, module)
