"""(IA)^3 (Liu et al., NeurIPS 2022): learned elementwise rescaling of keys, values and FFN.

Config: ``autopeft_service.domain.peft_config.IA3Config``. The scale vectors start at one,
so the model is unchanged at initialisation. Keys and values are rescaled at the output of
their projections (on GPT-2, their part of the fused ``c_attn`` output); the FFN at its
intermediate activation: on a post-norm encoder the intermediate module's output, on a
pre-norm decoder the input of its down projection (the same tensor: after the activation,
and on a Llama after the gate's product).
"""

from __future__ import annotations

import torch
from torch import nn

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.methods import ia3_target_width
from autopeft_service.domain.peft_config import IA3Config, IA3Target
from workers.peft.arch import ArchitectureMapping, get_submodule, replace_part, set_submodule
from workers.peft.registry import injector


class IA3Scale(nn.Module):
    """Wraps a module and rescales (a slice of) its output's last dimension.

    Args:
        base: the wrapped module.
        width: elements of the scale vector.
        out_slice: ``(start, end)`` of the output the vector rescales; None: all of it.
    """

    def __init__(self, base: nn.Module, width: int,
                 out_slice: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.base = base
        self.ia3_scale = nn.Parameter(torch.ones(width))
        self.out_slice = out_slice

    def forward(self, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        """The wrapped module's output times the learned vector."""
        out = self.base(*args, **kwargs)
        if self.out_slice is None:
            return out * self.ia3_scale
        start, end = self.out_slice
        return replace_part(out, self.out_slice, out[..., start:end] * self.ia3_scale)


class IA3InputScale(nn.Module):
    """Wraps a projection and rescales its input: ``base(x * scale)``."""

    def __init__(self, base: nn.Module, width: int) -> None:
        super().__init__()
        self.base = base
        self.ia3_scale = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., width) -> the wrapped module's output."""
        return self.base(x * self.ia3_scale)


def target_path(mapping: ArchitectureMapping, target: IA3Target) -> str:
    """Path, within a layer, of the module a target rescales (output, or input for the FFN
    of a pre-norm architecture)."""
    if target is IA3Target.FFN:
        return (mapping.projection("ffn_out").path if mapping.pre_norm
                else mapping.ffn_intermediate)
    return mapping.projection(target.value).path


def _wrap(layer: nn.Module, mapping: ArchitectureMapping, target: IA3Target,
          width: int) -> None:
    path = target_path(mapping, target)
    base = get_submodule(layer, path)
    if target is IA3Target.FFN:
        module: nn.Module = (IA3InputScale(base, width) if mapping.pre_norm
                             else IA3Scale(base, width))
    else:
        module = IA3Scale(base, width, mapping.projection(target.value).out_slice(width))
    set_submodule(layer, path, module)


def inject(backbone: nn.Module, mapping: ArchitectureMapping, config: IA3Config,
           dims: BackboneDims) -> None:
    """Wrap each target of every chosen layer in an (IA)^3 scale."""
    for layer, chosen in zip(mapping.layer_modules(backbone), config.layers, strict=True):
        if chosen:
            for target in config.targets:
                _wrap(layer, mapping, target, ia3_target_width(target, dims))


@injector("ia3", order=30)
def build(backbone: nn.Module, mapping: ArchitectureMapping, config: IA3Config | None,
          dims: BackboneDims) -> None:
    """Build ``PeftConfig.ia3``."""
    if config is not None:
        inject(backbone, mapping, config, dims)
