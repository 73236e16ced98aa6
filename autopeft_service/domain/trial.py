"""Training settings and trial results: what a worker is told and what it reports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from autopeft_service.domain.validation import parse_model

Pooling = Literal["mean", "cls"]


class TrainingSettings(BaseModel):
    """How a trial trains and evaluates. Defaults suit MiniLM-sized backbones on a CPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: float = Field(1.0, gt=0, le=100, description="Passes over the training split.")
    batch_size: int = Field(32, gt=0, le=4096)
    eval_batch_size: int = Field(128, gt=0, le=8192)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, lt=1)
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Linear warm-up share of steps.")
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(128, ge=8, le=4096, description="Tokens per example (truncation).")
    pooling: Pooling = Field("mean", description="Sentence vector for the head: mean or CLS.")
    head_dropout: float = Field(0.1, ge=0, lt=1)
    held_out_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train held out as the search objective's split.")
    max_held_out_examples: int | None = Field(1000, gt=0)
    max_train_examples: int | None = Field(
        None, gt=0, description="Subsample the remaining train split to this many examples.")
    max_dev_examples: int | None = Field(None, gt=0)
    data_seed: int = Field(0, ge=0, description="Seed of the held-out split and subsampling "
                           "(fixed across trials so all trials score on the same split).")

    @classmethod
    def from_dict(cls, data: object) -> TrainingSettings:
        """Validate a mapping. Raises ConfigError naming the invalid field."""
        return parse_model(cls, data)


class TrialResult(BaseModel):
    """What a finished trial reports.

    ``objective`` is the held-out score (the metric the search maximises); ``dev`` holds the
    task's dev-split metrics, reported but never selected on. Parameter counts exclude the
    task head; the share is in percent of the backbone. A re-training run on the whole train
    split (``autopeft retrain``; never a search trial) has no held-out part: its ``held_out``
    is empty and ``objective`` repeats the dev score.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    objective: float
    held_out: dict[str, float]
    dev: dict[str, float]
    dev_score: float
    trainable_parameters: int
    trainable_percent: float
    deployed_parameters: int
    head_parameters: int
    train_seconds: float
    eval_seconds: float
    load_seconds: float
    steps: int
    train_examples: int
    examples_per_second: float
    final_loss: float
    peak_memory_mb: float
    device: str
    seed: int
    config_description: str
