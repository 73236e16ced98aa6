"""The synthetic sentiment task: deterministic, balanced, compositional."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from autopeft_service.domain.errors import DataError
from workers.data import synthetic
from workers.data.synthetic import load_synthetic, synthetic_vocabulary

POSITIVE = set(synthetic.POSITIVE_ADJECTIVES)
NEGATIVE = set(synthetic.NEGATIVE_ADJECTIVES)


def _oracle(sentence: str) -> int:
    """The task's rule, written out independently of the generator."""
    words = sentence.split()
    for i, word in enumerate(words):
        if word in ("but", "yet"):
            words = words[i + 1:]
            break
        if word in ("although", "though"):
            words = words[:i]
            break
    (adjective,) = [w for w in words if w in POSITIVE | NEGATIVE]
    negated = "not" in words or "never" in words
    return int((adjective in POSITIVE) != negated)


@pytest.fixture(scope="module")
def task():
    return load_synthetic()


def test_defaults_and_determinism(task) -> None:
    assert task.name == "synthetic"
    assert (len(task.train), len(task.dev)) == (2000, 500)
    assert task.label_names == ("negative", "positive") and task.metrics == ("accuracy",)
    again = load_synthetic()
    assert again.train == task.train and again.dev == task.dev
    assert again.fingerprint == task.fingerprint
    other = load_synthetic(seed=1)
    assert other.train != task.train
    small = load_synthetic(n_train=40, n_dev=10, seed=3)
    assert (len(small.train), len(small.dev)) == (40, 10)
    assert small.name == "synthetic:n_train=40,n_dev=10,seed=3"


def test_balanced_unique_and_no_train_dev_overlap(task) -> None:
    assert Counter(ex.label for ex in task.train) == {0: 1000, 1: 1000}
    assert Counter(ex.label for ex in task.dev) == {0: 250, 1: 250}
    train_texts = [ex.texts[0] for ex in task.train]
    dev_texts = [ex.texts[0] for ex in task.dev]
    assert len(set(train_texts)) == len(train_texts)
    assert len(set(dev_texts)) == len(dev_texts)
    assert not set(train_texts) & set(dev_texts)


def test_every_word_is_in_the_vocabulary(task) -> None:
    vocabulary = synthetic_vocabulary()
    assert vocabulary == sorted(set(vocabulary))
    assert all(w == w.lower() and w.isalpha() for w in vocabulary)
    used = {w for ex in task.train + task.dev for w in ex.texts[0].split()}
    assert used <= set(vocabulary)
    assert len(used) > 0.9 * len(vocabulary)


def test_labels_follow_the_compositional_rule(task) -> None:
    assert all(_oracle(ex.texts[0]) == ex.label for ex in task.train + task.dev)
    # The rule function exported for documentation agrees with the generator too.
    assert all(synthetic.sentence_polarity(ex.texts[0]) == bool(ex.label) for ex in task.dev)


def test_structure_negation_and_contrast_are_frequent_and_flip_labels(task) -> None:
    texts = [ex.texts[0] for ex in task.train]
    two_clause = [t for t in texts if {"but", "yet", "although", "though"} & set(t.split())]
    negated = [t for t in texts if {"not", "never"} & set(t.split())]
    assert 0.6 < len(two_clause) / len(texts) < 0.8
    assert 0.3 < len(negated) / len(texts) < 0.65
    # Removing the negator from a single negated clause flips its label ...
    single_negated = [t for t in negated if t not in two_clause]
    assert single_negated
    for text in single_negated[:50]:
        plain = " ".join(w for w in text.split() if w not in ("not", "never"))
        assert _oracle(plain) != _oracle(text)
    # ... and swapping "but" for "although" flips a contrast sentence's label, because the two
    # clauses always have opposite polarity.
    contrasts = [t for t in two_clause if " but " in t]
    assert contrasts
    for text in contrasts[:50]:
        assert _oracle(text.replace(" but ", " although ")) != _oracle(text)
    # Every adjective occurs under both labels, so the adjective alone cannot decide.
    by_adjective: dict[str, set[int]] = {}
    for ex in task.train:
        for word in ex.texts[0].split():
            if word in POSITIVE | NEGATIVE:
                by_adjective.setdefault(word, set()).add(ex.label)
    assert all(labels == {0, 1} for labels in by_adjective.values())


def test_bag_of_words_cannot_solve_it(task) -> None:
    train_x = [ex.texts[0] for ex in task.train]
    dev_x = [ex.texts[0] for ex in task.dev]
    train_y = [ex.label for ex in task.train]
    dev_y = [ex.label for ex in task.dev]
    vectorizer = CountVectorizer(token_pattern=r"\S+")
    model = LogisticRegression(max_iter=2000).fit(vectorizer.fit_transform(train_x), train_y)
    bow = model.score(vectorizer.transform(dev_x), dev_y)
    assert bow < 0.65, f"unigram bag of words scores {bow:.3f} on dev"
    bigrams = CountVectorizer(token_pattern=r"\S+", ngram_range=(1, 2))
    model = LogisticRegression(max_iter=2000).fit(bigrams.fit_transform(train_x), train_y)
    assert model.score(bigrams.transform(dev_x), dev_y) < 0.8


@pytest.fixture
def one_thread():
    """Tiny matrices gain nothing from threads, and threads stall when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_sizes_must_be_at_least_two() -> None:
    with pytest.raises(DataError, match="n_train must be at least 2"):
        load_synthetic(n_train=1)
    with pytest.raises(DataError, match="n_dev must be at least 2"):
        load_synthetic(n_dev=0)
