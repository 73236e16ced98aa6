"""Tokenisation of causal-LM (prompt, response) examples: layout, response start, truncation, cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workers.data import load_task
from workers.data.synthetic_lm import synthetic_lm_vocabulary
from workers.data.task import Example, TaskType
from workers.data.tokenized import (
    TokenizedCache,
    TokenizedSplit,
    tokenize_examples,
    tokenizer_fingerprint,
)

SPECIALS = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}
CAUSAL = TaskType.CAUSAL_LM


def _word_tokenizer(**specials: str | None):
    """A word-level fast tokenizer over the synthetic-lm words; ``specials`` override roles."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    roles = {**SPECIALS, **specials}
    words = ["<pad>", "<unk>", "<s>", "</s>", *synthetic_lm_vocabulary()]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = {f"{role}_token": token for role, token in roles.items() if token is not None}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


@pytest.fixture
def tokenizer():
    return _word_tokenizer()


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(text.split())


EXAMPLES = (
    Example(("copy cat dog", "cat dog"), 0),
    Example(("", "five"), 0),
    Example(("next one two three", "two three four"), 0),
)


def test_layout_start_eos_padding_and_lengths(tokenizer) -> None:
    split = tokenize_examples(tokenizer, EXAMPLES, max_length=12, task_type="causal_lm")
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    assert split.input_ids.shape == (3, 12) and split.input_ids.dtype == torch.long
    assert split.input_ids[0, :7].tolist() == [bos, *_ids(tokenizer, "copy cat dog cat dog"), eos]
    assert split.input_ids[1, :3].tolist() == [bos, *_ids(tokenizer, "five"), eos]
    assert split.input_ids[2, :9].tolist() == [
        bos, *_ids(tokenizer, "next one two three two three four"), eos]
    assert split.lengths.tolist() == [7, 3, 9]
    assert split.labels.dtype == torch.long and split.labels.tolist() == [4, 1, 5]
    for row, length in enumerate(split.lengths.tolist()):
        assert (split.input_ids[row, length:] == pad).all()  # right padding
        assert split.attention_mask[row].tolist() == [1] * length + [0] * (12 - length)
        start = int(split.labels[row])
        response = EXAMPLES[row].texts[1]
        assert split.input_ids[row, start:length].tolist() == [*_ids(tokenizer, response), eos]
    assert split.token_type_ids is None


def test_truncation_cuts_the_end_but_keeps_a_response_token(tokenizer) -> None:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    long_prompt = Example(("copy cat dog fish bird tree rock", "cat dog"), 0)
    cases = [
        # (example, max_length, expected tokens after BOS, expected start)
        (EXAMPLES[2], 7, "next one two three two three", 5),  # response and eos cut
        (EXAMPLES[2], 6, "next one two three two", 5),  # one response token left
        (long_prompt, 5, "bird tree rock cat", 4),  # the prompt is cut from the left
        (long_prompt, 8, "cat dog fish bird tree rock cat", 7),  # BOS + prompt exactly fill it
        (long_prompt, 9, "copy cat dog fish bird tree rock cat", 8),  # room for one response token
        (long_prompt, 2, "cat", 1),  # BOS + first response token
    ]
    for example, max_length, expected, start in cases:
        split = tokenize_examples(tokenizer, (example,), max_length=max_length, task_type=CAUSAL)
        row = split.input_ids[0, : int(split.lengths[0])].tolist()
        assert row == [bos, *_ids(tokenizer, expected)], (max_length, row)
        assert int(split.labels[0]) == start
        assert int(split.lengths[0]) == max_length
        assert eos not in row
        assert int(split.labels[0]) < int(split.lengths[0])  # a response token to score


def test_no_bos_no_pad_and_no_eos_tokenizers() -> None:
    no_bos = _word_tokenizer(bos=None)
    split = tokenize_examples(no_bos, EXAMPLES[:2], max_length=8, task_type=CAUSAL)
    eos = no_bos.eos_token_id
    assert split.input_ids[0, :6].tolist() == [*_ids(no_bos, "copy cat dog cat dog"), eos]
    assert split.labels.tolist() == [3, 0]  # empty prompt without BOS: starts at 0

    no_pad = _word_tokenizer(pad=None)
    assert no_pad.pad_token_id is None
    split = tokenize_examples(no_pad, EXAMPLES[:2], max_length=8, task_type=CAUSAL)
    assert (split.input_ids[1, 3:] == no_pad.eos_token_id).all()  # eos as pad
    assert split.attention_mask[1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert no_pad.pad_token_id is None  # the tokenizer is not changed

    no_eos = _word_tokenizer(eos=None)
    split = tokenize_examples(no_eos, EXAMPLES[:1], max_length=8, task_type=CAUSAL)
    assert split.lengths.tolist() == [6] and no_eos.eos_token_id is None
    assert split.input_ids[0, 6:].tolist() == [no_eos.pad_token_id] * 2

    with pytest.raises(ValueError, match="neither a pad nor an end-of-sequence token"):
        tokenize_examples(_word_tokenizer(pad=None, eos=None), EXAMPLES, max_length=8,
                          task_type=CAUSAL)


def test_bad_examples_and_arguments(tokenizer) -> None:
    with pytest.raises(ValueError, match=r"example 1 has 1 texts; a causal_lm example has 2"):
        tokenize_examples(tokenizer, (EXAMPLES[0], Example(("x",), 0)), max_length=8,
                          task_type=CAUSAL)
    with pytest.raises(ValueError, match="max_length"):
        tokenize_examples(tokenizer, EXAMPLES, max_length=1, task_type=CAUSAL)
    empty = tokenize_examples(tokenizer, (), max_length=4, task_type=CAUSAL)
    assert empty.input_ids.shape == (0, 4) and empty.labels.shape == (0,)


def test_state_round_trip_batch_and_cache(tokenizer, tmp_path: Path) -> None:
    split = tokenize_examples(tokenizer, EXAMPLES, max_length=12, task_type=CAUSAL)
    again = TokenizedSplit.from_state(split.to_state())
    for name in ("input_ids", "attention_mask", "labels", "lengths"):
        assert torch.equal(getattr(again, name), getattr(split, name)), name
    assert again.token_type_ids is None and again.labels.dtype == torch.long

    batch = split.batch(torch.tensor([1, 0]))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (2, 7) and batch["labels"].tolist() == [1, 4]

    first = TokenizedCache(tmp_path).get(tokenizer, EXAMPLES, key="lm:train", max_length=12,
                                         task_type=CAUSAL)
    fresh = TokenizedCache(tmp_path)
    loaded = fresh.get(tokenizer, EXAMPLES, key="lm:train", max_length=12, task_type="causal_lm")
    assert (fresh.disk_hits, fresh.misses) == (1, 0)
    for name in ("input_ids", "attention_mask", "labels", "lengths"):
        assert torch.equal(getattr(loaded, name), getattr(first, name)), name
    keys = {TokenizedCache.cache_key(tokenizer, key="k", max_length=12, task_type=kind)
            for kind in TaskType}
    assert len(keys) == len(TaskType)


def test_fingerprint_sees_bos_and_eos(tokenizer) -> None:
    base = tokenizer_fingerprint(tokenizer)
    assert tokenizer_fingerprint(_word_tokenizer()) == base
    assert tokenizer_fingerprint(_word_tokenizer(eos="<unk>")) != base
    assert tokenizer_fingerprint(_word_tokenizer(bos=None)) != base


def test_synthetic_lm_and_lm_files_tokenise_without_unknown_words(tokenizer, tmp_path: Path) -> None:
    task = load_task("synthetic-lm")
    split = tokenize_examples(tokenizer, task.train, max_length=16, task_type=task.task_type)
    assert (split.input_ids != tokenizer.unk_token_id).all()
    assert split.lengths.tolist() == [9] * len(task.train)  # bos + 4 + 3 + eos
    assert split.labels.tolist() == [5] * len(task.train)

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"prompt": "copy cat", "response": "cat"}\n')
    (folder / "dev.jsonl").write_text('{"prompt": "next one", "response": "two"}\n')
    lm = load_task("lm:d", tmp_path)
    dev = tokenize_examples(tokenizer, lm.dev, max_length=8, task_type=lm.task_type)
    assert dev.input_ids[0, :5].tolist() == [
        tokenizer.bos_token_id, *_ids(tokenizer, "next one two"), tokenizer.eos_token_id]
    assert dev.labels.tolist() == [3]
