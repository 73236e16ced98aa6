"""The plan of a paired comparison: which arms, on which task, at which fidelity, how many
seeds (``autopeft compare PLAN``; the statistics are ``domain.comparison``).

A plan file (YAML or JSON)::

    model: minilm                  # minilm | smollm2 | a backbone folder
    task: glue:sst2
    data_dir: ../shared/data/glue
    seeds: 5                       # seeds 0..4, or a list [0, 3, 7]
    training: {epochs: 2, max_train_examples: 4000, max_length: 64, batch_size: 16}
    candidates:
      - name: unified-6
        config: {num_layers: 6, lora: [...], ...}   # a PeftConfig, as `autopeft pareto --json`
    baselines:
      - lora-r8-qv                 # a catalogue baseline (domain.baselines), by name
      - full-ft
      - {name: serial-8, config: {...}, training: {learning_rate: 0.003}}

Each candidate is compared with every baseline (Holm across the baselines). ``training``
holds TrainingSettings fields shared by every arm; an arm's own ``training`` overrides them
(a catalogue baseline's overrides, such as full fine-tuning's learning rate, apply too).
``data_seed`` is not a plan field: seed k trains every arm on the subset drawn with data
seed k, so the arms of one seed are paired.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

from autopeft_service.domain.baselines import BASELINES, Baseline
from autopeft_service.domain.comparison import DEFAULT_ALPHA, DEFAULT_RESAMPLES
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.trial import MAX_SEED, TrainingSettings
from autopeft_service.domain.validation import parse_model

#: Most seeds and arms a plan may name (a plan is run on one machine, sequentially).
MAX_SEEDS = 100
MAX_ARMS = 64


class ArmSpec(BaseModel):
    """One arm: a catalogue baseline by name, or a named configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[\w.@#+=:-]+( [\w.@#+=:-]+)*$",
                             description="How reports call it; defaults to the baseline's name.")
    baseline: str | None = Field(None, description="A catalogue baseline (domain.baselines).")
    config: dict[str, Any] | None = Field(None, description="A PeftConfig as JSON.")
    training: dict[str, Any] = Field(default_factory=dict,
                                     description="TrainingSettings fields for this arm only.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.baseline is None) == (self.config is None):
            raise ValueError("give exactly one of `baseline` (a catalogue name) and `config`")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; known: {', '.join(BASELINES)}")
        if self.config is not None:
            if self.name is None:
                raise ValueError("an arm with a `config` needs a `name`")
            PeftConfig.from_dict(self.config)  # ConfigError (a ValueError) names the field
        if "data_seed" in self.training:
            raise ValueError("training.data_seed: set by the seed (every arm of seed k trains "
                             "on the subset of data seed k)")
        return self

    @property
    def label(self) -> str:
        """The arm's name in reports."""
        return self.name or str(self.baseline)

    def catalogue(self) -> Baseline | None:
        """The catalogue baseline, or None for a configuration."""
        return BASELINES[self.baseline] if self.baseline is not None else None

    def build(self, num_layers: int) -> PeftConfig:
        """The arm's configuration for a backbone of ``num_layers`` layers.

        Raises:
            ConfigError: an inline configuration built for another depth.
        """
        baseline = self.catalogue()
        if baseline is not None:
            return baseline.config(num_layers)
        config = PeftConfig.from_dict(self.config)
        if config.num_layers != num_layers:
            raise ConfigError(f"arm {self.label!r}: its config has num_layers "
                              f"{config.num_layers} but the backbone has {num_layers} layers")
        return config

    def settings(self, shared: TrainingSettings) -> TrainingSettings:
        """``shared`` with the catalogue baseline's and then the arm's own overrides.

        Raises:
            ConfigError: an override is invalid (names the field).
        """
        baseline = self.catalogue()
        base = baseline.settings(shared) if baseline is not None else shared
        if not self.training:
            return base
        return TrainingSettings.from_dict({**base.model_dump(), **self.training})


def _arm(value: Any) -> Any:
    """A bare string stands for ``{baseline: NAME}``."""
    return {"baseline": value} if isinstance(value, str) else value


class ComparisonPlan(BaseModel):
    """A paired comparison to run (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, max_length=4096)
    task: str = Field(min_length=1, max_length=4096)
    data_dir: str | None = Field(None, max_length=4096)
    task_options: dict[str, Any] = Field(default_factory=dict)
    seeds: StrictInt | list[StrictInt] = Field(5, description="K (seeds 0..K-1) or a list.")
    training: dict[str, Any] = Field(default_factory=dict)
    candidates: list[ArmSpec] = Field(min_length=1, max_length=MAX_ARMS)
    baselines: list[ArmSpec] = Field(min_length=1, max_length=MAX_ARMS)
    alpha: StrictFloat = Field(DEFAULT_ALPHA, gt=0, lt=1)
    resamples: StrictInt = Field(DEFAULT_RESAMPLES, ge=100, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _bare_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("candidates", "baselines"):
                if isinstance(data.get(key), list):
                    data[key] = [_arm(v) for v in data[key]]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        seeds = self.seed_list()
        if not seeds or len(seeds) > MAX_SEEDS:
            raise ValueError(f"seeds: give 1 to {MAX_SEEDS} seeds")
        if len(set(seeds)) != len(seeds) or not all(0 <= s <= MAX_SEED for s in seeds):
            raise ValueError(f"seeds: must be distinct, from 0 to {MAX_SEED}")
        if "data_seed" in self.training:
            raise ValueError("training.data_seed: set by the seed (every arm of seed k trains "
                             "on the subset of data seed k)")
        TrainingSettings.from_dict(self.training)  # names a bad field
        labels = [a.label for a in [*self.candidates, *self.baselines]]
        repeated = sorted({n for n in labels if labels.count(n) > 1})
        if repeated:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(repeated)}")
        return self

    def seed_list(self) -> list[int]:
        """The seeds, in run order."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def shared_settings(self) -> TrainingSettings:
        """The plan's TrainingSettings (before arm overrides and the per-seed data seed)."""
        return TrainingSettings.from_dict(self.training)

    @classmethod
    def from_dict(cls, data: object) -> ComparisonPlan:
        """Validate a mapping.

        Raises:
            ConfigError: naming the first invalid field.
        """
        return parse_model(cls, data)


def seed_settings(settings: TrainingSettings, seed: int) -> TrainingSettings:
    """``settings`` for seed ``seed``: its own data subset (``data_seed`` = the seed)."""
    return settings.model_copy(update={"data_seed": seed})
