"""The bottleneck MLP shared by serial and parallel adapters: f(x W_down + b) W_up + b."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class Bottleneck(nn.Module):
    """Down-project to ``bottleneck``, apply the activation, up-project back.

    The up-projection starts at zero, so the module's output is zero at initialisation.
    Parameters: 2 * hidden * bottleneck + bottleneck + hidden.
    """

    def __init__(self, hidden: int, bottleneck: int, activation: str = "relu") -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.activation = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., hidden)."""
        return self.up(self.activation(self.down(x)))
