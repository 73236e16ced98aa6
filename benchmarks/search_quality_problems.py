"""The problems the search-quality benchmark optimises: the surrogate of a real table of
trials (``SurrogateProblem``), the synthetic problems, and ``make_problem`` by name.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from synthetic_problem import (
    FAMILY_PROBLEMS,
    FamilyProblem,
    Point,
    SyntheticProblem,
)

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.spaces import AutoPeftSpace, SearchSpaceBase
from autopeft_service.optimizers.base import Observation
from autopeft_service.optimizers.saasbo import Encoding

PROBLEM_NAMES = ("surrogate", "synthetic-15", "synthetic-27", *FAMILY_PROBLEMS)


class Problem(Protocol):
    """A problem may also have ``noiseless(point) -> float``: then the hypervolume is
    computed on it (the true score of the evaluated points), not on the observed score."""

    name: str
    space: SearchSpaceBase
    reference: tuple[float, float]

    def observe(self, point: Point) -> Observation | None:
        """The result of evaluating ``point``; None when it is invalid (a failed trial)."""
        ...

    def share(self, point: Point) -> float:
        """The exact share objective of a valid point (what ``observe`` reports)."""
        ...


def minilm_backbone() -> BackboneDims:
    """MiniLM-L6 (all-MiniLM-L6-v2): 6 layers, hidden 384."""
    return BackboneDims.from_hf_config({
        "model_type": "bert", "hidden_size": 384, "intermediate_size": 1536,
        "num_hidden_layers": 6, "num_attention_heads": 12, "vocab_size": 30522,
        "max_position_embeddings": 512})


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a real-evaluation table CSV (columns: the space's parameters, ``score``,
    ``dev_score``, ``param_share``, ...), completed trials only."""
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("state", "completed") == "completed"]


class SurrogateProblem:
    """A regression model of the real table's held-out score; exact parameter share.

    The model is sklearn's ``ExtraTreesRegressor`` (500 trees, min 3 samples per leaf) on
    the scaled choice indices: piecewise-constant, so it never extrapolates beyond the scores
    it saw, and it needs no tuning. ``fit_error`` is its 5-fold cross-validated error.
    """

    def __init__(self, table: Path) -> None:
        from sklearn.ensemble import ExtraTreesRegressor

        self.name = "surrogate"
        self.dims = minilm_backbone()
        self.space = AutoPeftSpace.for_backbone(self.dims)
        self.encoding = Encoding(self.space)  # the scaled choice indices SAAS-BO models
        rows = read_table(table)
        if len(rows) < 20:
            raise SystemExit(f"{table}: {len(rows)} completed rows; the surrogate needs >= 20")
        points = [{p.name: int(row[p.name]) for p in self.space.parameters()} for row in rows]
        self.x = self._inputs(points)
        self.y = np.array([float(row["score"]) for row in rows])
        self.model_factory: Callable[[], Any] = lambda: ExtraTreesRegressor(
            n_estimators=500, min_samples_leaf=3, random_state=0, n_jobs=1)
        self.model = self.model_factory().fit(self.x, self.y)
        self.fit_error = self._cross_validate()
        # Floor: the table's 10th-percentile score, so the front above typical trials counts.
        self.reference = (float(np.quantile(self.y, 0.1)), 10.0)
        self.rows = len(rows)

    def _inputs(self, points: Sequence[Point]) -> np.ndarray:
        return self.encoding.to_unit(self.encoding.to_index(points)).numpy()

    def _cross_validate(self) -> dict[str, float]:
        from scipy.stats import spearmanr
        from sklearn.model_selection import KFold

        predicted = np.zeros_like(self.y)
        for train, test in KFold(5, shuffle=True, random_state=0).split(self.x):
            predicted[test] = self.model_factory().fit(self.x[train], self.y[train]).predict(
                self.x[test])
        residual = predicted - self.y
        total = float(np.sum((self.y - self.y.mean()) ** 2))
        return {"rmse": float(np.sqrt(np.mean(residual ** 2))),
                "mae": float(np.mean(np.abs(residual))),
                "r2": 1 - float(np.sum(residual ** 2)) / total if total > 0 else float("nan"),
                "spearman": float(spearmanr(predicted, self.y).statistic),
                "score_std": float(self.y.std())}

    def observe(self, point: Point) -> Observation | None:
        if not self.space.is_valid(point):
            return None
        config = self.space.decode(point)
        score = float(self.model.predict(self._inputs([point]))[0])
        return Observation(params=dict(point), score=score,
                           param_share=count_parameters(config, self.dims).trainable_percent)

    def share(self, point: Point) -> float:
        return count_parameters(self.space.decode(point), self.dims).trainable_percent


def make_problem(name: str, table: Path, seed: int = 0) -> Problem:
    """The problem ``name``; ``seed`` is the run's (it seeds the family problems' noise)."""
    if name == "surrogate":
        return SurrogateProblem(table)
    if name in FAMILY_PROBLEMS:
        return FamilyProblem(FAMILY_PROBLEMS[name], seed=seed)
    return SyntheticProblem(int(name.split("-")[1]))
