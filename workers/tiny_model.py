"""A tiny random BERT written to a model folder, for tests on machines with no model hub.

The folder has the same files as a real checkpoint (config, safetensors weights, WordPiece
vocab and tokenizer), so tests exercise the real loading path. Weights are random: the
model learns only what its trainable parts learn.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizer

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
    # transformers 5 ignores BertTokenizer(vocab_file=...): load the folder's vocab.txt
    # (BertTokenizer is the fast tokenizer there; BertTokenizerFast is only its alias).
    tokenizer = BertTokenizer.from_pretrained(str(directory), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=ffn_size, max_position_embeddings=max_length,
                        pad_token_id=0)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    return directory


#: Special tokens of the tiny decoders' word-level tokenizer.
DECODER_SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")


def write_tiny_decoder(directory: str | Path, words: Iterable[str], *,
                       model_type: str = "llama", num_layers: int = 2, hidden_size: int = 32,
                       num_heads: int = 4, num_kv_heads: int = 2, ffn_size: int = 64,
                       max_length: int = 128, tie_embeddings: bool = True,
                       initializer_range: float = 0.02, seed: int = 0) -> Path:
    """Write a tiny random decoder (``llama``, ``qwen2``, ``mistral``, ``qwen3`` or ``gpt2``)
    with a word-level tokenizer to ``directory``.

    The tokenizer splits on whitespace and punctuation; it adds no special token itself
    (``<s>`` is the BOS, ``</s>`` the EOS, ``<pad>`` the pad token).

    Args:
        directory: target folder (created).
        words: the vocabulary (lower-cased).
        model_type: the architecture.
        num_layers, hidden_size, num_heads, ffn_size: the architecture's sizes.
        num_kv_heads: key/value heads (grouped-query attention; Llama family only).
        max_length: maximum positions.
        tie_embeddings: tie the LM head to the input embeddings.
        initializer_range: standard deviation of the random weights. A frozen random LM
            head of the usual 0.02 gives logits too small to ever be confident; a larger
            one lets PEFT modules alone learn a task.
        seed: seed of the random weights.

    Returns:
        The folder, loadable by ``workers.backbone.load_backbone``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = list(DECODER_SPECIAL_TOKENS) + sorted(
        {w.lower() for w in words} - set(DECODER_SPECIAL_TOKENS))
    vocab += [c for c in ".,!?;:'\"-" if c not in vocab]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                        unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(directory)
    ids = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    if model_type == "gpt2":
        config = AutoConfig.for_model(
            "gpt2", vocab_size=len(vocab), n_embd=hidden_size, n_layer=num_layers,
            n_head=num_heads, n_inner=ffn_size, n_positions=max_length,
            tie_word_embeddings=tie_embeddings, initializer_range=initializer_range, **ids)
    else:
        config = AutoConfig.for_model(
            model_type, vocab_size=len(vocab), hidden_size=hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads, intermediate_size=ffn_size,
            max_position_embeddings=max_length, tie_word_embeddings=tie_embeddings,
            initializer_range=initializer_range, **ids)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory
