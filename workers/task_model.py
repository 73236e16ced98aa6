"""The trained model of a trial: a PEFT-modified backbone and its task head.

* ``TaskModel`` (classification and regression): backbone -> pooled vector -> linear head.
* ``CausalLMModel`` (causal-LM tasks on decoders): backbone -> the frozen LM head, scored on
  the response tokens only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class TaskModel(nn.Module):
    """Backbone -> sentence vector (mean over tokens, the first or the last real token) ->
    dropout -> linear.

    The head (``head``) always trains; what trains in the backbone is decided by
    ``workers.peft.apply_peft`` before this wrapper is built.
    """

    def __init__(self, backbone: nn.Module, hidden: int, num_outputs: int, pooling: str,
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


class CausalLMModel(nn.Module):
    """A decoder fine-tuned as a language model on responses.

    Args:
        backbone: the PEFT-modified base model (``LlamaModel``, ``GPT2Model``).
        lm_head: its output projection to the vocabulary; frozen (it is usually tied to the
            input embeddings), so the head has no trainable parameter.

    The batch's ``labels`` are, per row, the index of the first response token; the loss
    and the score cover the response tokens ``[labels[i], length[i])``, each predicted from
    the positions before it.
    """

    def __init__(self, backbone: nn.Module, lm_head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.lm_head = lm_head

    def token_log_likelihoods(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              labels: torch.Tensor) -> torch.Tensor:
        """Log-probability of every response token, flat: (number of response tokens,).

        Only the response positions go through the LM head (a vocabulary-wide projection
        of every position would dominate memory).
        """
        hidden = self.backbone(input_ids=input_ids,
                               attention_mask=attention_mask).last_hidden_state
        targets = response_mask(attention_mask, labels)  # (B, T): tokens to predict
        predicting = torch.zeros_like(targets)
        predicting[:, :-1] = targets[:, 1:]  # position t predicts token t + 1
        logits = self.lm_head(hidden[predicting]).float()
        return -functional.cross_entropy(logits, input_ids[targets], reduction="none")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        """The mean negative log-likelihood per response token of the batch (the loss)."""
        return -self.token_log_likelihoods(input_ids, attention_mask, labels).mean()

    def head_parameter_count(self) -> int:
        """Trainable elements of the head: none (the LM head stays frozen)."""
        return sum(p.numel() for p in self.lm_head.parameters() if p.requires_grad)


def response_mask(attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """(B, T) boolean: True on the response tokens, ``[response_start[i], length[i])``.

    A response starting at position 0 has no token before it to predict from: position 0
    is never a target.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    start = response_start.clamp(min=1).unsqueeze(1)
    return (positions.unsqueeze(0) >= start) & attention_mask.bool()


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, d) token states -> (B, d): the mean over unmasked tokens, the first token
    (``cls``) or the last unmasked token (``last``; rows are right-padded)."""
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    if pooling == "last":
        last = (attention_mask.sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "cls":
        return hidden[:, 0]
    raise ValueError(f"pooling {pooling!r}: resolve 'auto' first (domain.trial.resolve_pooling)")
