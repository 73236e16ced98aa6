"""Task data types shared by every loader: examples, a task with its splits, and splitting helpers.

A :class:`TaskData` is what every loader (GLUE, CSV/JSONL, hub, synthetic, prompt/response
JSONL) returns: the examples of a train and a dev split, the label set, and the metrics to
report. It is immutable and carries a content fingerprint used as a cache key (tokenisation
cache).

A causal-LM task (:attr:`TaskType.CAUSAL_LM`) has no labels: each example is a
``(prompt, response)`` pair whose response the model learns to continue the prompt with,
and it is scored by :data:`CAUSAL_LM_METRICS` on the dev split.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from autopeft_service.domain.errors import DataError

__all__ = ["CAUSAL_LM_METRICS", "Example", "TaskData", "TaskType", "holdout_split", "subsample"]


class TaskType(StrEnum):
    """Kind of prediction a task asks for."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    CAUSAL_LM = "causal_lm"


CAUSAL_LM_METRICS: tuple[str, ...] = ("log_likelihood", "perplexity")
"""Metrics of every causal-LM task, primary first.

``log_likelihood``: mean natural-log probability per response token (the tokens a
:class:`~workers.data.tokenized.TokenizedSplit` scores, end-of-sequence included) over the
held-out split, pooled over all its tokens; higher is better. ``perplexity``:
``exp(-log_likelihood)``; lower is better.
"""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled example.

    Attributes:
        texts: One text segment, or two for a sentence-pair task; for a causal-LM task
            always ``(prompt, response)``.
        label: Class index in ``0..num_labels-1`` (classification), the target value
            (regression), or ``0`` (causal LM, which has no label).
    """

    texts: tuple[str, ...]
    label: int | float


@dataclass(frozen=True)
class TaskData:
    """A task: its train and dev examples, label set and metrics.

    Attributes:
        name: Canonical task name, e.g. ``"glue:rte"``, ``"synthetic"``, ``"csv:/abs/dir"``.
        task_type: Classification, regression or causal LM.
        label_names: Classification: original label string of each class index, in index
            order. Regression and causal LM: ``()``.
        metrics: Metric names to report; ``metrics[0]`` is the primary one (the search
            objective).
        train: Training examples.
        dev: Development (evaluation) examples.
    """

    name: str
    task_type: TaskType
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    train: tuple[Example, ...] = field(repr=False)
    dev: tuple[Example, ...] = field(repr=False)

    def __post_init__(self) -> None:
        """Check the invariants between task type, labels and metrics.

        Also normalises the fields: ``task_type`` to :class:`TaskType`, sequences to tuples.

        Raises:
            DataError: If the label set does not fit the task type, no metric is given, or
                (causal LM) an example is not a ``(prompt, response)`` pair of strings with
                a response that is not blank.
        """
        try:
            object.__setattr__(self, "task_type", TaskType(self.task_type))
        except ValueError:
            raise DataError(f"task {self.name!r}: unknown task type {self.task_type!r}") from None
        for name in ("label_names", "metrics", "train", "dev"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if self.task_type is TaskType.CLASSIFICATION and len(self.label_names) < 2:
            raise DataError(
                f"task {self.name!r}: a classification task needs at least 2 labels, "
                f"got {list(self.label_names)}"
            )
        if self.task_type is TaskType.REGRESSION and self.label_names:
            raise DataError(f"task {self.name!r}: a regression task has no label names")
        if self.task_type is TaskType.CAUSAL_LM:
            self._check_causal_lm()
        if not self.metrics:
            raise DataError(f"task {self.name!r}: at least one metric is required")

    def _check_causal_lm(self) -> None:
        """Check that a causal-LM task has no label names and only (prompt, response) examples.

        Raises:
            DataError: Naming the split and example index of the first offending example.
        """
        if self.label_names:
            raise DataError(f"task {self.name!r}: a causal_lm task has no label names")
        for split_name, split in (("train", self.train), ("dev", self.dev)):
            for i, example in enumerate(split):
                where = f"task {self.name!r}, {split_name} example {i}"
                if len(example.texts) != 2:
                    raise DataError(
                        f"{where}: a causal_lm example has 2 texts (prompt, response), "
                        f"got {len(example.texts)}"
                    )
                if not all(isinstance(text, str) for text in example.texts):
                    raise DataError(f"{where}: prompt and response must be strings")
                if not example.texts[1].strip():
                    raise DataError(f"{where}: the response is empty")
                if example.label != 0:
                    raise DataError(
                        f"{where}: a causal_lm example has label 0, got {example.label!r}"
                    )

    @property
    def num_labels(self) -> int:
        """Number of outputs of the task head.

        The number of classes (classification), 1 (regression), or 0 (causal LM, which has
        no task head: the model's own LM head predicts the tokens).
        """
        if self.task_type is TaskType.REGRESSION:
            return 1
        if self.task_type is TaskType.CAUSAL_LM:
            return 0
        return len(self.label_names)

    @cached_property
    def fingerprint(self) -> str:
        """Stable SHA-256 hex digest of the name, label set, metrics and every example.

        Equal content gives an equal fingerprint across processes and machines, so it
        can key on-disk caches. Computed once per object.
        """
        digest = hashlib.sha256()
        header = [
            "autopeft-task-v1", self.name, str(self.task_type),
            list(self.label_names), list(self.metrics),
        ]
        digest.update(json.dumps(header).encode("utf-8"))
        for split_name, split in (("train", self.train), ("dev", self.dev)):
            digest.update(f"\n#{split_name}:{len(split)}\n".encode())
            for example in split:
                digest.update(json.dumps([example.texts, example.label]).encode("utf-8"))
                digest.update(b"\n")
        return digest.hexdigest()


def holdout_split(
    examples: Sequence[Example], fraction: float, seed: int, max_size: int | None = None
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """Split examples into a part to fit on and a held-out part, deterministically.

    The held-out part is ``round(len(examples) * fraction)`` examples (at least 1, at most
    ``max_size``) drawn by a shuffle seeded with ``seed``. Both parts keep the original
    order of the examples.

    Args:
        examples: Examples to split (typically the train split of a task).
        fraction: Share of examples to hold out, strictly between 0 and 1.
        seed: Seed of the shuffle; the same seed gives the same split.
        max_size: Upper bound on the held-out size (``None``: no bound).

    Returns:
        ``(fit, held_out)``: disjoint tuples whose union is ``examples``.

    Raises:
        DataError: If ``fraction`` is not in (0, 1), ``max_size`` is below 1, or there are
            too few examples to leave at least one on each side.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"holdout fraction: must be strictly between 0 and 1, got {fraction}")
    if max_size is not None and max_size < 1:
        raise DataError(f"holdout max_size: must be at least 1, got {max_size}")
    n = len(examples)
    if n < 2:
        raise DataError(f"holdout split: needs at least 2 examples, got {n}")
    n_held = max(1, round(n * fraction))
    if max_size is not None:
        n_held = min(n_held, max_size)
    if n_held >= n:
        raise DataError(
            f"holdout split: fraction {fraction} of {n} examples leaves none to fit on"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:n_held])
    fit = tuple(ex for i, ex in enumerate(examples) if i not in held)
    held_out = tuple(ex for i, ex in enumerate(examples) if i in held)
    return fit, held_out


def subsample(examples: Sequence[Example], n: int, seed: int) -> tuple[Example, ...]:
    """Draw ``n`` examples without replacement, deterministically, keeping their order.

    Args:
        examples: Examples to draw from.
        n: Number to draw; if it is at least ``len(examples)`` all are returned.
        seed: Seed of the draw; the same seed gives the same subset.

    Returns:
        The drawn examples in their original order.

    Raises:
        DataError: If ``n`` is negative.
    """
    if n < 0:
        raise DataError(f"subsample size: must be non-negative, got {n}")
    if n >= len(examples):
        return tuple(examples)
    chosen = sorted(random.Random(seed).sample(range(len(examples)), n))
    return tuple(examples[i] for i in chosen)
