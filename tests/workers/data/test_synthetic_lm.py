"""The synthetic causal-LM task: deterministic, balanced, unique prompts, closed vocabulary."""

from __future__ import annotations

from collections import Counter

import pytest

from autopeft_service.domain.errors import DataError
from workers.data import load_task
from workers.data.synthetic_lm import (
    LM_NUMBER_WORDS,
    load_synthetic_lm,
    synthetic_lm_response,
    synthetic_lm_vocabulary,
)
from workers.data.task import TaskType


@pytest.fixture(scope="module")
def task():
    return load_synthetic_lm()


def _oracle(prompt: str) -> str:
    """The task's rule, written out independently of the generator."""
    op, *words = prompt.split()
    if op == "copy":
        return " ".join(words)
    assert op == "next"
    return " ".join(LM_NUMBER_WORDS[(LM_NUMBER_WORDS.index(w) + 1) % 10] for w in words)


def test_defaults_and_determinism(task) -> None:
    assert task.name == "synthetic-lm" and task.task_type is TaskType.CAUSAL_LM
    assert task.label_names == () and task.num_labels == 0
    assert task.metrics == ("log_likelihood", "perplexity")
    assert (len(task.train), len(task.dev)) == (512, 128)
    assert load_synthetic_lm().fingerprint == task.fingerprint
    assert load_synthetic_lm(seed=1).fingerprint != task.fingerprint
    small = load_synthetic_lm(n_train=10, n_dev=4, seed=3)
    assert small.name == "synthetic-lm:n_train=10,n_dev=4,seed=3"
    assert load_synthetic_lm(n_train=10, n_dev=4, seed=3).train == small.train


def test_load_task_synthetic_lm(task) -> None:
    assert load_task("synthetic-lm").fingerprint == task.fingerprint
    assert load_task(" Synthetic-LM ").fingerprint == task.fingerprint
    with pytest.raises(DataError, match="label_column only apply"):
        load_task("synthetic-lm", label_column="label")
    assert load_task("synthetic").task_type is TaskType.CLASSIFICATION  # unchanged


def test_examples_follow_the_rule_and_are_balanced_and_unique(task) -> None:
    for split in (task.train, task.dev):
        for ex in split:
            prompt, response = ex.texts
            assert ex.label == 0
            assert response == _oracle(prompt) == synthetic_lm_response(prompt)
            assert len(prompt.split()) == 4 and len(response.split()) == 3
        assert Counter(ex.texts[0].split()[0] for ex in split) == {
            "copy": len(split) // 2, "next": len(split) // 2}
    prompts = [ex.texts[0] for ex in task.train + task.dev]
    assert len(set(prompts)) == len(prompts)  # unique, so none in both splits
    # copy also draws number words, so the op word is needed to tell the rules apart
    assert any(set(ex.texts[0].split()[1:]) <= set(LM_NUMBER_WORDS)
               for ex in task.train if ex.texts[0].startswith("copy"))


def test_vocabulary_covers_every_word(task) -> None:
    vocabulary = synthetic_lm_vocabulary()
    assert vocabulary == sorted(set(vocabulary)) and 20 <= len(vocabulary) <= 40
    assert all(word.isalpha() and word.islower() for word in vocabulary)
    used = {word for ex in task.train + task.dev for text in ex.texts for word in text.split()}
    assert used == set(vocabulary)  # every word appears, and nothing else
    for ex in task.train[:50]:
        for text in ex.texts:
            assert text == " ".join(text.split())  # single spaces, no punctuation


def test_rule_and_size_errors() -> None:
    assert synthetic_lm_response("next nine zero four") == "zero one five"
    assert synthetic_lm_response("copy cat two dog") == "cat two dog"
    with pytest.raises(ValueError, match="unknown operation 'add'"):
        synthetic_lm_response("add one two")
    with pytest.raises(ValueError, match="not number words"):
        synthetic_lm_response("next cat")
    with pytest.raises(DataError, match="n_dev must be at least 2"):
        load_synthetic_lm(n_dev=1)
    with pytest.raises(DataError, match="'next' rule has only 1000 distinct prompts"):
        load_synthetic_lm(n_train=1800, n_dev=300)
