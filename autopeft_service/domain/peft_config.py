"""PeftConfig: the exact PEFT configuration a worker builds and trains.

Every method follows He et al. (ICLR 2022, "Towards a Unified View of Parameter-Efficient
Transfer Learning"): a modification Δh with a function, a position (attention or FFN), a
form (sequential or parallel) and a scale. Each method is configured *per layer*: a size
of 0 (or ``False``) at layer ``i`` means the method is absent from that layer, and a
method whose sizes are all 0 builds no module at all.

Pure Python (pydantic only): no torch, SQL or HTTP here. JSON round-trips exactly:
``PeftConfig.from_json(cfg.to_json()) == cfg``.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from autopeft_service.domain.method_configs import (
    BitFitConfig,
    IA3Config,
    IA3Target,
    LoraConfig,
    LoraTarget,
    ParallelAdapterConfig,
    Position,
    PrefixConfig,
    SerialAdapterConfig,
    _Frozen,
)

__all__ = [  # the method configurations are re-exported: they were defined here first
    "BitFitConfig",
    "IA3Config",
    "IA3Target",
    "LoraConfig",
    "LoraTarget",
    "ParallelAdapterConfig",
    "PeftConfig",
    "Position",
    "PrefixConfig",
    "SerialAdapterConfig",
]
from autopeft_service.domain.validation import FieldError, parse_model, parse_model_json


class PeftConfig(_Frozen):
    """A complete PEFT configuration for a backbone with ``num_layers`` layers.

    An empty configuration (no method) trains the task head alone; ``full_finetuning``
    trains the whole backbone (a baseline; it excludes every other method).

    Raises (on construction):
        pydantic.ValidationError: use ``from_dict``/``from_json`` for a ConfigError that
        names the field.
    """

    num_layers: int = Field(gt=0, description="Layers of the backbone this config is for.")
    serial_adapters: tuple[SerialAdapterConfig, ...] = Field(
        (), description="Serial adapters, at most one per position."
    )
    parallel_adapters: tuple[ParallelAdapterConfig, ...] = Field(
        (), description="Parallel adapters, at most one per position."
    )
    prefix: PrefixConfig | None = None
    lora: tuple[LoraConfig, ...] = Field(
        (), description="LoRA modules, each on its own projections (e.g. one rank on "
        "query/value, another on the FFN). A single object is read as a one-element list.")
    bitfit: BitFitConfig | None = None
    ia3: IA3Config | None = None
    full_finetuning: bool = Field(False, description="Train every backbone parameter.")

    @field_validator("lora", mode="before")
    @classmethod
    def _lora_list(cls, value: object) -> object:
        # Configurations stored before LoRA took a list hold one object or null.
        if value is None:
            return ()
        if isinstance(value, (dict, LoraConfig)):
            return (value,)
        return value

    @model_validator(mode="after")
    def _check_layers(self) -> Self:
        from autopeft_service.domain.methods import methods

        for kind, adapters in (("serial_adapters", self.serial_adapters),
                               ("parallel_adapters", self.parallel_adapters)):
            positions = [a.position for a in adapters]
            if len(set(positions)) != len(positions):
                raise FieldError(kind, "at most one adapter per position, got "
                                       f"{[p.value for p in positions]}")
        seen_targets: set[LoraTarget] = set()
        for i, lora in enumerate(self.lora):
            repeated = seen_targets & set(lora.targets)
            if repeated:
                raise FieldError(f"lora.{i}.targets", "a projection takes one LoRA, "
                                 f"{sorted(t.value for t in repeated)} repeat")
            seen_targets |= set(lora.targets)
        for method in methods():
            for path, values in method.per_layer(method.value(self)):
                if len(values) != self.num_layers:
                    raise FieldError(f"{method.field}.{path}",
                                     f"has {len(values)} entries, expected one per layer "
                                     f"(num_layers={self.num_layers})")
        if self.full_finetuning and self.has_modules:
            raise FieldError("full_finetuning",
                             "excludes PEFT methods: give one or the other")
        return self

    @property
    def has_modules(self) -> bool:
        """True when at least one method is present in at least one layer."""
        from autopeft_service.domain.methods import methods

        return any(method.is_present(self) for method in methods())

    @property
    def is_head_only(self) -> bool:
        """True when only the task head trains."""
        return not self.full_finetuning and not self.has_modules

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``serial@ffn[64x6] + lora[8x6:query,value]``."""
        from autopeft_service.domain.methods import methods

        if self.full_finetuning:
            return "full fine-tuning"
        parts = [part for method in methods() for part in method.describe(method.value(self))]
        return " + ".join(parts) if parts else "head only"

    def to_json(self) -> str:
        """Serialise to JSON (round-trips through ``from_json``)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> PeftConfig:
        """Parse and validate JSON. Raises ConfigError naming the invalid field."""
        return parse_model_json(cls, text)

    @classmethod
    def from_dict(cls, data: object) -> PeftConfig:
        """Validate a mapping. Raises ConfigError naming the invalid field."""
        return parse_model(cls, data)
