"""Task types, fingerprints, held-out splits and subsampling."""

from __future__ import annotations

import pytest

from autopeft_service.domain.errors import DataError
from workers.data.task import Example, TaskData, TaskType, holdout_split, subsample

EXAMPLES = tuple(Example((f"text {i}",), i % 2) for i in range(100))


def _task(**changes) -> TaskData:
    fields = {"name": "csv:/x", "task_type": TaskType.CLASSIFICATION, "label_names": ("a", "b"),
              "metrics": ("accuracy",), "train": EXAMPLES[:80], "dev": EXAMPLES[80:]}
    fields.update(changes)
    return TaskData(**fields)


def test_num_labels_and_invariants() -> None:
    assert _task().num_labels == 2
    regression = _task(task_type=TaskType.REGRESSION, label_names=(),
                       train=(Example(("a", "b"), 0.5),), dev=(Example(("c", "d"), 1.5),))
    assert regression.num_labels == 1
    with pytest.raises(DataError, match="at least 2 labels"):
        _task(label_names=("a",))
    with pytest.raises(DataError, match="regression task has no label names"):
        _task(task_type=TaskType.REGRESSION)
    with pytest.raises(DataError, match="at least one metric"):
        _task(metrics=())
    coerced = _task(task_type="classification", label_names=["a", "b"], train=list(EXAMPLES))
    assert coerced.task_type is TaskType.CLASSIFICATION
    assert isinstance(coerced.label_names, tuple) and isinstance(coerced.train, tuple)


def test_fingerprint_is_stable_and_content_sensitive() -> None:
    base = _task().fingerprint
    assert base == _task().fingerprint
    assert len(base) == 64 and int(base, 16) >= 0
    assert _task(name="csv:/y").fingerprint != base
    changed = EXAMPLES[:79] + (Example(("text 79",), 0),)
    assert _task(train=changed).fingerprint != base
    moved = _task(train=EXAMPLES[:79], dev=EXAMPLES[79:])
    assert moved.fingerprint != base  # same examples, different split boundary
    assert _task(label_names=("b", "a")).fingerprint != base


def test_holdout_split_is_deterministic_disjoint_and_ordered() -> None:
    fit, held = holdout_split(EXAMPLES, 0.2, seed=7)
    assert (len(fit), len(held)) == (80, 20)
    assert set(fit).isdisjoint(held) and set(fit) | set(held) == set(EXAMPLES)
    assert holdout_split(EXAMPLES, 0.2, seed=7) == (fit, held)
    assert holdout_split(EXAMPLES, 0.2, seed=8)[1] != held
    order = {ex: i for i, ex in enumerate(EXAMPLES)}
    assert [order[e] for e in held] == sorted(order[e] for e in held)
    assert len(holdout_split(EXAMPLES, 0.5, seed=0, max_size=10)[1]) == 10
    assert len(holdout_split(EXAMPLES[:3], 0.01, seed=0)[1]) == 1  # at least one held out


@pytest.mark.parametrize(
    ("examples", "fraction", "max_size", "message"),
    [
        (EXAMPLES, 0.0, None, "strictly between 0 and 1"),
        (EXAMPLES, 1.0, None, "strictly between 0 and 1"),
        (EXAMPLES[:1], 0.5, None, "at least 2 examples"),
        (EXAMPLES[:2], 0.9, None, "leaves none to fit on"),
        (EXAMPLES, 0.1, 0, "max_size"),
    ],
)
def test_holdout_split_errors(examples, fraction, max_size, message) -> None:
    with pytest.raises(DataError, match=message):
        holdout_split(examples, fraction, seed=0, max_size=max_size)


def test_subsample() -> None:
    drawn = subsample(EXAMPLES, 10, seed=3)
    assert len(drawn) == 10 and len(set(drawn)) == 10
    assert drawn == subsample(EXAMPLES, 10, seed=3)
    assert drawn != subsample(EXAMPLES, 10, seed=4)
    assert subsample(EXAMPLES, 1000, seed=0) == EXAMPLES
    assert subsample(EXAMPLES, 0, seed=0) == ()
    with pytest.raises(DataError, match="non-negative"):
        subsample(EXAMPLES, -1, seed=0)
