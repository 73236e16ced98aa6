"""Training settings and trial results: what a worker is told and what it reports."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from autopeft_service.domain.early_stopping import MAX_RUNGS
from autopeft_service.domain.validation import FieldError, parse_model

#: Sentence vector for a classification head: the mean over tokens, the first token
#: (``cls``), the last real token (``last``, what a decoder's causal attention needs), or
#: ``auto``: ``last`` on a decoder, ``mean`` on an encoder.
Pooling = Literal["auto", "mean", "cls", "last"]


def resolve_pooling(pooling: str, is_decoder: bool) -> str:
    """The pooling a model uses: ``auto`` resolved by the backbone kind, others as given."""
    if pooling == "auto":
        return "last" if is_decoder else "mean"
    return pooling

#: Largest seed accepted anywhere (numpy's and scipy's generators take 32-bit seeds).
MAX_SEED = 2**32 - 1
#: Largest example count a setting may name.
MAX_EXAMPLES = 100_000_000


class TrainingSettings(BaseModel):
    """How a trial trains and evaluates. Defaults suit MiniLM-sized backbones on a CPU."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    epochs: StrictFloat = Field(1.0, gt=0, le=100, description="Passes over the training split.")
    batch_size: StrictInt = Field(32, gt=0, le=4096)
    eval_batch_size: StrictInt = Field(128, gt=0, le=8192)
    learning_rate: StrictFloat = Field(1e-3, gt=0, lt=1)
    weight_decay: StrictFloat = Field(0.0, ge=0, lt=1)
    warmup_ratio: StrictFloat = Field(0.06, ge=0, lt=1, description="Linear warm-up share of steps.")
    max_grad_norm: StrictFloat = Field(1.0, gt=0, le=1e6)
    max_length: StrictInt = Field(128, ge=8, le=4096, description="Tokens per example (truncation).")
    pooling: Pooling = Field(
        "auto", description="Sentence vector for the head: mean, cls (first token), last (last "
        "real token) or auto (last on a decoder, mean on an encoder).")
    gradient_checkpointing: StrictBool = Field(
        False, description="Recompute layer activations in the backward pass instead of "
        "keeping them: less memory, about a third more compute.")
    head_dropout: StrictFloat = Field(0.1, ge=0, lt=1)
    held_out_fraction: StrictFloat = Field(
        0.1, gt=0, lt=1, description="Share of train held out as the search objective's split.")
    max_held_out_examples: StrictInt | None = Field(1000, gt=0, le=MAX_EXAMPLES)
    max_train_examples: StrictInt | None = Field(
        None, gt=0, le=MAX_EXAMPLES,
        description="Subsample the remaining train split to this many examples.")
    max_dev_examples: StrictInt | None = Field(None, gt=0, le=MAX_EXAMPLES)
    data_seed: StrictInt = Field(0, ge=0, le=MAX_SEED, description="Seed of the held-out split and subsampling "
                           "(fixed across trials so all trials score on the same split).")

    @classmethod
    def from_dict(cls, data: object) -> TrainingSettings:
        """Validate a mapping. Raises ConfigError naming the invalid field."""
        return parse_model(cls, data)


class RungScore(BaseModel):
    """A trial's held-out score at one rung of its training (``domain.early_stopping``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    rung: StrictInt = Field(ge=0, lt=MAX_RUNGS, description="Index into early_stopping.rungs.")
    step: StrictInt = Field(ge=1, le=10**12, description="Training step the score was taken at.")
    score: StrictFloat = Field(ge=-1e9, le=1e9, description="The objective metric on the rung's "
                         "held-out examples.")
    examples: StrictInt = Field(ge=0, le=10**12, description="Held-out examples scored.")
    eval_seconds: StrictFloat = Field(0.0, ge=0, le=1e9, description="Seconds the scoring took.")


class TrialResult(BaseModel):
    """What a finished trial reports.

    ``objective`` is the held-out score (the metric the search maximises); ``dev`` holds the
    task's dev-split metrics, reported but never selected on. Parameter counts exclude the
    task head; each is reported twice, as a count and as a share in percent of the
    backbone: ``trainable`` (what trains, a prefix's reparameterising MLP included) and
    ``deployed`` (what is stored per task after training, the MLP folded away). The
    study's ``param_share`` picks which share is the objective (deployed by default); the
    server checks both counts against its own and shows both shares (``TrialSummary``).
    ``deployed_percent`` stays optional so that older workers' reports still parse; the
    server then derives it from the counts. A re-training run on the whole train
    split (``autopeft retrain``; never a search trial) has no held-out part: its ``held_out``
    is empty and ``objective`` repeats the dev score.
    """

    # Numbers are finite (JSON has no NaN; one NaN result once broke every view of its
    # study) and bounded; the metric dictionaries are small.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    metric: str = Field(min_length=1, max_length=100)
    objective: StrictFloat = Field(ge=-1e9, le=1e9)
    held_out: dict[str, Annotated[StrictFloat, Field(ge=-1e9, le=1e9)]] = Field(max_length=64)
    dev: dict[str, Annotated[StrictFloat, Field(ge=-1e9, le=1e9)]] = Field(max_length=64)
    dev_score: StrictFloat = Field(ge=-1e9, le=1e9)
    trainable_parameters: StrictInt = Field(ge=0, le=10**15)
    trainable_percent: StrictFloat = Field(
        ge=0, le=1e6, description="Trainable parameters (a prefix's MLP included) in "
        "percent of the backbone.")
    deployed_parameters: StrictInt = Field(ge=0, le=10**15)
    deployed_percent: StrictFloat | None = Field(
        None, ge=0, le=1e6, description="Deployed parameters in percent of the backbone (the "
        "default share objective); absent from results of older workers.")
    head_parameters: StrictInt = Field(ge=0, le=10**15)
    train_seconds: StrictFloat = Field(ge=0, le=1e9)
    eval_seconds: StrictFloat = Field(ge=0, le=1e9)
    load_seconds: StrictFloat = Field(ge=0, le=1e9)
    steps: StrictInt = Field(ge=0, le=10**12, description="The step training ended at, "
                             "counting a resumed checkpoint's steps (see start_step).")
    train_examples: StrictInt = Field(ge=0, le=10**12)
    examples_per_second: StrictFloat = Field(ge=0, le=1e12)
    final_loss: StrictFloat = Field(ge=-1e12, le=1e12)
    peak_memory_mb: StrictFloat = Field(ge=0, le=1e12)
    device: str = Field(max_length=100)
    seed: StrictInt = Field(ge=0, le=MAX_SEED)
    config_description: str = Field(max_length=10_000)
    rungs: list[RungScore] = Field(
        default_factory=list, max_length=MAX_RUNGS,
        description="Scores at the study's rungs (none when it names no rungs).")
    rung_eval_seconds: StrictFloat = Field(
        0.0, ge=0, le=1e9, description="Seconds spent scoring rungs (not in train_seconds).")
    fidelity: StrictFloat = Field(
        1.0, gt=0, le=1, description="Fraction of the full training budget (steps) the run "
        "trained to; 1 for a full run and for results of older workers.")
    start_step: StrictInt = Field(
        0, ge=0, le=10**12, description="Steps already trained in the checkpoint the run "
        "resumed from (freeze-thaw continuation); 0 for a fresh run. train_seconds and "
        "examples_per_second cover only the steps after it.")

    @model_validator(mode="after")
    def _start_within_steps(self) -> Self:
        if self.start_step > self.steps:
            raise FieldError("start_step", f"{self.start_step} exceeds steps ({self.steps}): "
                             "a resumed run ends after the step it resumed from")
        return self
