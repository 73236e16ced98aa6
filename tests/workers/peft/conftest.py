"""Tiny random BERT and RoBERTa encoders built in memory."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

from autopeft_service.domain import BackboneDims

NUM_LAYERS = 3


def make_encoder(family: str, attn: str = "sdpa", seed: int = 0) -> tuple[torch.nn.Module,
                                                                              BackboneDims]:
    """A random 3-layer encoder (hidden 32, 4 heads, FFN 48), eval mode, and its dims."""
    config_class, model_class = {"bert": (BertConfig, BertModel),
                                 "roberta": (RobertaConfig, RobertaModel)}[family]
    config = config_class(vocab_size=60, hidden_size=32, num_hidden_layers=NUM_LAYERS,
                          num_attention_heads=4, intermediate_size=48,
                          max_position_embeddings=40, attn_implementation=attn,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    return model, BackboneDims.from_hf_config(config.to_dict())


@pytest.fixture(params=["bert", "roberta"])
def encoder_factory(request: pytest.FixtureRequest) -> Callable[..., tuple]:
    return lambda **kw: make_encoder(request.param, **kw)


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Two sequences of 9 tokens, the second padded after 6."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 60, (2, 9), generator=generator)
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def parameters_with_gradients(model: torch.nn.Module) -> set[str]:
    """The names of ``model``'s trainable parameters after a backward pass, asserting that
    each got a non-zero gradient and that no frozen one got any."""
    trainable = set()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            trainable.add(name)
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    return trainable
