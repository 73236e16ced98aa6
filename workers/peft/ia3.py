"""(IA)^3 (Liu et al., NeurIPS 2022): learned elementwise rescaling of keys, values and FFN.

Config: ``autopeft_service.domain.peft_config.IA3Config``. The scale vectors start at one,
so the model is unchanged at initialisation. Keys and values are rescaled at the output of
their projections; the FFN at its intermediate activation (after the nonlinearity).
"""

from __future__ import annotations

import torch
from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.peft_config import IA3Config, IA3Target
from workers.peft.arch import ArchitectureMapping, get_submodule, set_submodule
from workers.peft.registry import injector


class IA3Scale(nn.Module):
    """Wraps a module whose output's last dimension is ``width`` and rescales it."""

    def __init__(self, base: nn.Module, width: int) -> None:
        super().__init__()
        self.base = base
        self.ia3_scale = nn.Parameter(torch.ones(width))

    def forward(self, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        """The wrapped module's output times the learned vector."""
        return self.base(*args, **kwargs) * self.ia3_scale


def target_path(mapping: ArchitectureMapping, target: IA3Target) -> str:
    """Path, within a layer, of the module whose output a target rescales."""
    return {
        IA3Target.KEY: f"{mapping.self_attention}.key",
        IA3Target.VALUE: f"{mapping.self_attention}.value",
        IA3Target.FFN: mapping.ffn_intermediate,
    }[target]


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: IA3Config, hidden: int,
           ffn: int) -> None:
    """Wrap each target of every chosen layer in an IA3Scale."""
    widths = {IA3Target.KEY: hidden, IA3Target.VALUE: hidden, IA3Target.FFN: ffn}
    for layer, chosen in zip(mapping.layer_modules(backbone), config.layers, strict=True):
        if chosen:
            for target in config.targets:
                path = target_path(mapping, target)
                set_submodule(layer, path, IA3Scale(get_submodule(layer, path), widths[target]))


@injector("ia3", order=30)
def build(backbone: nn.Module, mapping: ArchitectureMapping, config: IA3Config | None,
          dims: BackboneDims) -> None:
    """Build ``PeftConfig.ia3``."""
    if config is not None:
        inject(backbone, mapping, config, dims.hidden_size, dims.ffn_size)
