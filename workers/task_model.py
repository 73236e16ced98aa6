"""The trained model of a trial: PEFT-modified backbone + pooling + a linear task head."""

from __future__ import annotations

import torch
from torch import nn

from autopeft_service.domain.trial import Pooling


class TaskModel(nn.Module):
    """Backbone -> sentence vector (mean over tokens or the first token) -> dropout -> linear.

    The head (``head``) always trains; what trains in the backbone is decided by
    ``workers.peft.apply_peft`` before this wrapper is built.
    """

    def __init__(self, backbone: nn.Module, hidden: int, num_outputs: int, pooling: Pooling,
                 dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_outputs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids and mask -> (B, num_outputs) logits (or regression values)."""
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               **kwargs).last_hidden_state
        return self.head(self.dropout(pool(hidden, attention_mask, self.pooling)))

    def head_parameter_count(self) -> int:
        """Elements of the task head."""
        return sum(p.numel() for p in self.head.parameters())


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, d) token states -> (B, d): the mean over unmasked tokens, or the first token."""
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return hidden[:, 0]
