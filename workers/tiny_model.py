"""A tiny random BERT written to a model folder, for tests on machines with no model hub.

The folder has the same files as a real checkpoint (config, safetensors weights, WordPiece
vocab and tokenizer), so tests exercise the real loading path. Weights are random: the
model learns only what its trainable parts learn.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def write_tiny_bert(directory: str | Path, words: Iterable[str], *, num_layers: int = 2,
                    hidden_size: int = 32, num_heads: int = 4, ffn_size: int = 64,
                    max_length: int = 64, seed: int = 0) -> Path:
    """Write a tiny random BERT with a word-level vocabulary to ``directory``.

    Args:
        directory: target folder (created).
        words: the vocabulary (lower-case words; punctuation is split by the tokenizer).
        num_layers, hidden_size, num_heads, ffn_size: the architecture.
        max_length: maximum positions.
        seed: seed of the random weights.

    Returns:
        The folder, loadable by ``workers.backbone.load_backbone``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = list(SPECIAL_TOKENS) + sorted({w.lower() for w in words} - set(SPECIAL_TOKENS))
    vocab += [c for c in ".,!?;:'\"-" if c not in vocab]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores BertTokenizerFast(vocab_file=...): load the folder's vocab.txt.
    tokenizer = BertTokenizerFast.from_pretrained(str(directory), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=ffn_size, max_position_embeddings=max_length,
                        pad_token_id=0)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    return directory
