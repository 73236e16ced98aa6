"""LoRA (Hu et al., ICLR 2022): y = W x + (alpha / r) * B A x, with B = 0 at initialisation.

Config: ``autopeft_service.domain.peft_config.LoraConfig`` (rank per layer, targets).
In He et al.'s unified view LoRA is a parallel, linear modification of W_q / W_v.
Initialisation follows huggingface/peft: A ~ kaiming-uniform(a=sqrt(5)), B = 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.peft_config import LoraConfig, LoraTarget
from workers.peft.arch import ArchitectureMapping, get_submodule, set_submodule
from workers.peft.registry import injector


class LoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update of rank ``rank``, times ``scaling``."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        update = (self.dropout(x) @ self.lora_A.t()) @ self.lora_B.t()
        return self.base(x) + update * self.scaling


def target_path(mapping: ArchitectureMapping, target: LoraTarget) -> str:
    """Path, within a layer, of the linear a LoRA target adapts."""
    return {
        LoraTarget.QUERY: f"{mapping.self_attention}.query",
        LoraTarget.KEY: f"{mapping.self_attention}.key",
        LoraTarget.VALUE: f"{mapping.self_attention}.value",
        LoraTarget.ATTENTION_OUTPUT: f"{mapping.attention_output}.dense",
        LoraTarget.FFN_IN: f"{mapping.ffn_intermediate}.dense",
        LoraTarget.FFN_OUT: f"{mapping.ffn_output}.dense",
    }[target]


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: LoraConfig) -> None:
    """Wrap each target linear of every layer with a non-zero rank in a LoraLinear."""
    for layer, rank in zip(mapping.layer_modules(backbone), config.ranks, strict=True):
        if not rank:
            continue
        for target in config.targets:
            path = target_path(mapping, target)
            base = get_submodule(layer, path)
            if not isinstance(base, nn.Linear):
                raise TypeError(f"LoRA target {path} is {type(base).__name__}, not nn.Linear")
            set_submodule(layer, path, LoraLinear(base, rank, config.scaling(rank), config.dropout))


@injector("lora", order=20)
def build(backbone: nn.Module, mapping: ArchitectureMapping, config: tuple[LoraConfig, ...],
          dims: BackboneDims) -> None:
    """Build every LoRA module of ``PeftConfig.lora`` (each on its own projections)."""
    for module in config:
        inject(backbone, mapping, module)
