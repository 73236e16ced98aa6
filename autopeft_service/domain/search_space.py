"""The AutoPEFT search space and its encoding for the optimiser.

AutoPEFT (Zhou et al., TACL 2024) searches, for an L-layer backbone:
  * L binary insertion flags, one per layer, shared by the three modules;
  * the serial adapter bottleneck D_SA, the parallel adapter bottleneck D_PA and the
    prefix length L_PT, each an ordered choice of {0 (off), 1, hidden/2^k ...}.
That is L + 3 dimensions (15 for 12 layers, 27 for 24). A point is valid when at least
one layer is on and at least one module is on.

The optimiser sees a point as ``{name: int}``: ``layer_<i>`` in {0, 1} and the three size
parameters holding the size itself (one of their choices). ``decode`` turns a point into
exactly the PeftConfig the worker trains; ``encode`` inverts it, so the vector a model
learns from and the configuration trained are the same object.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.peft_config import (
    ParallelAdapterConfig,
    PeftConfig,
    Position,
    PrefixConfig,
    SerialAdapterConfig,
)
from autopeft_service.domain.validation import FieldError

SERIAL_ADAPTER_SIZE = "serial_adapter_size"
PARALLEL_ADAPTER_SIZE = "parallel_adapter_size"
PREFIX_LENGTH = "prefix_length"


#: Most layers a space may have. Public backbones have at most ~130 (Llama 3.1 405B: 126);
#: beyond this the optimisers' cost grows for nothing (one study with 21,000 layers once
#: stopped every proposal of the server).
MAX_LAYERS = 256
#: Largest module size (bottleneck, prefix length) and hidden size a space may name.
MAX_SIZE = 65_536
#: Most choices one ordered size parameter may list.
MAX_CHOICES = 64


def layer_parameter(index: int) -> str:
    """Name of the insertion flag of layer ``index``."""
    return f"layer_{index}"


class ParameterKind(StrEnum):
    """How the optimiser should treat a parameter."""

    BINARY = "binary"  # values (0, 1)
    ORDINAL = "ordinal"  # ordered choice among ``values``


class SearchParameter(BaseModel):
    """One dimension of the search space."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: ParameterKind
    values: tuple[int, ...]


def default_sizes(hidden_size: int) -> tuple[int, ...]:
    """AutoPEFT's size choices: 0 (off), 1, and hidden/2^k while it stays an integer >= 2.

    For hidden 768: (0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768); for 384: (0, 1, 3, ..., 384).
    """
    sizes = {0, 1}
    size = hidden_size
    while size >= 2 and size == int(size):
        sizes.add(int(size))
        size = size / 2
    return tuple(sorted(sizes))


class AutoPeftSpace(BaseModel):
    """AutoPEFT's space: per-layer flags + serial/parallel adapter sizes + prefix length.

    Build one for a backbone with ``AutoPeftSpace.for_backbone(dims)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["autopeft"] = "autopeft"
    num_layers: int = Field(gt=0, le=MAX_LAYERS)
    serial_adapter_sizes: tuple[int, ...] = Field(min_length=1, max_length=MAX_CHOICES)
    parallel_adapter_sizes: tuple[int, ...] = Field(min_length=1, max_length=MAX_CHOICES)
    prefix_lengths: tuple[int, ...] = Field(min_length=1, max_length=MAX_CHOICES)
    parallel_adapter_scale: float = Field(4.0, gt=0, le=1000)
    prefix_reparameterize: bool = True
    prefix_mlp_width: int = Field(800, gt=0, le=MAX_SIZE)

    @model_validator(mode="after")
    def _check_choices(self) -> Self:
        for name in ("serial_adapter_sizes", "parallel_adapter_sizes", "prefix_lengths"):
            values = getattr(self, name)
            if any(v < 0 or v > MAX_SIZE for v in values):
                raise FieldError(name, f"sizes must be between 0 and {MAX_SIZE}, got "
                                 f"{list(values)}")
            if list(values) != sorted(set(values)):
                raise FieldError(name, f"must be strictly increasing, got {list(values)}")
        if not any(v > 0 for name in ("serial_adapter_sizes", "parallel_adapter_sizes",
                                        "prefix_lengths") for v in getattr(self, name)):
            raise ValueError("at least one module needs a non-zero size choice")
        return self

    @classmethod
    def for_backbone(cls, dims: BackboneDims, **overrides: object) -> AutoPeftSpace:
        """The default AutoPEFT space for a backbone (sizes from ``default_sizes``)."""
        sizes = default_sizes(dims.hidden_size)
        values: dict[str, object] = {
            "num_layers": dims.num_layers, "serial_adapter_sizes": sizes,
            "parallel_adapter_sizes": sizes, "prefix_lengths": sizes,
        }
        values.update(overrides)
        return cls.model_validate(values)

    @property
    def dimension(self) -> int:
        """Number of optimiser parameters: layers + 3."""
        return self.num_layers + 3

    def size(self) -> int:
        """Number of valid points: (2^L - 1) layer patterns with a layer on, times the size
        combinations with a module on (every combination but all-off)."""
        combinations = (len(self.serial_adapter_sizes) * len(self.parallel_adapter_sizes)
                        * len(self.prefix_lengths))
        all_off = all(0 in values for values in (
            self.serial_adapter_sizes, self.parallel_adapter_sizes, self.prefix_lengths))
        return (2 ** self.num_layers - 1) * (combinations - int(all_off))

    def parameters(self) -> list[SearchParameter]:
        """The optimiser's parameters, layer flags first."""
        flags = [SearchParameter(name=layer_parameter(i), kind=ParameterKind.BINARY, values=(0, 1))
                 for i in range(self.num_layers)]
        return flags + [
            SearchParameter(name=SERIAL_ADAPTER_SIZE, kind=ParameterKind.ORDINAL,
                            values=self.serial_adapter_sizes),
            SearchParameter(name=PARALLEL_ADAPTER_SIZE, kind=ParameterKind.ORDINAL,
                            values=self.parallel_adapter_sizes),
            SearchParameter(name=PREFIX_LENGTH, kind=ParameterKind.ORDINAL,
                            values=self.prefix_lengths),
        ]

    def validate_point(self, point: Mapping[str, int]) -> dict[str, int]:
        """Check a point's names and values; return it as a plain dict in parameter order.

        Raises:
            ConfigError: unknown or missing parameter, or a value outside its choices.
        """
        params = self.parameters()
        names = {p.name for p in params}
        unknown = sorted(set(point) - names)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown parameter of the autopeft space")
        clean: dict[str, int] = {}
        for p in params:
            if p.name not in point:
                raise ConfigError(f"{p.name}: missing")
            value = point[p.name]
            if isinstance(value, bool) or not isinstance(value, int) or value not in p.values:
                raise ConfigError(f"{p.name}: {value!r} is not one of {list(p.values)}")
            clean[p.name] = value
        return clean

    def is_valid(self, point: Mapping[str, int]) -> bool:
        """True when the point is well-formed, has a layer on and a module on."""
        try:
            clean = self.validate_point(point)
        except ConfigError:
            return False
        return self._validity_error(clean) is None

    def _validity_error(self, clean: Mapping[str, int]) -> str | None:
        if not any(clean[layer_parameter(i)] for i in range(self.num_layers)):
            return "no layer is on: at least one layer_<i> must be 1"
        if not (clean[SERIAL_ADAPTER_SIZE] or clean[PARALLEL_ADAPTER_SIZE] or clean[PREFIX_LENGTH]):
            return "no module is on: a size or the prefix length must be > 0"
        return None

    def decode(self, point: Mapping[str, int]) -> PeftConfig:
        """The PeftConfig a point stands for.

        Raises:
            ConfigError: the point is malformed or invalid (no layer or no module on).
        """
        clean = self.validate_point(point)
        error = self._validity_error(clean)
        if error is not None:
            raise ConfigError(error)
        flags = [clean[layer_parameter(i)] for i in range(self.num_layers)]

        def per_layer(size: int) -> tuple[int, ...]:
            return tuple(size if flag else 0 for flag in flags)

        serial, parallel, prefix = (clean[SERIAL_ADAPTER_SIZE], clean[PARALLEL_ADAPTER_SIZE],
                                    clean[PREFIX_LENGTH])
        return PeftConfig(
            num_layers=self.num_layers,
            serial_adapters=(SerialAdapterConfig(sizes=per_layer(serial), position=Position.FFN),)
            if serial else (),
            parallel_adapters=(ParallelAdapterConfig(sizes=per_layer(parallel),
                                                     position=Position.FFN,
                                                     scale=self.parallel_adapter_scale),)
            if parallel else (),
            prefix=PrefixConfig(lengths=per_layer(prefix),
                                reparameterize=self.prefix_reparameterize,
                                mlp_width=self.prefix_mlp_width) if prefix else None,
        )

    def encode(self, config: PeftConfig) -> dict[str, int]:
        """The point whose ``decode`` is ``config``.

        Raises:
            ConfigError: ``config`` is outside this space (another method, per-layer sizes
                that differ, or modules that do not share the same layers).
        """
        if config.num_layers != self.num_layers:
            raise ConfigError(f"num_layers: config has {config.num_layers}, space has "
                              f"{self.num_layers}")
        if config.lora or config.bitfit or config.ia3 or config.full_finetuning:
            raise ConfigError("config uses a method outside the autopeft space")
        if any(a.position is not Position.FFN for a in
               (*config.serial_adapters, *config.parallel_adapters)):
            raise ConfigError("adapters of the autopeft space sit at the FFN")
        per_method: dict[str, tuple[int, ...]] = {}
        if config.serial_adapters:
            per_method[SERIAL_ADAPTER_SIZE] = config.serial_adapters[0].sizes
        if config.parallel_adapters:
            per_method[PARALLEL_ADAPTER_SIZE] = config.parallel_adapters[0].sizes
        if config.prefix is not None:
            per_method[PREFIX_LENGTH] = config.prefix.lengths
        point: dict[str, int] = {SERIAL_ADAPTER_SIZE: 0, PARALLEL_ADAPTER_SIZE: 0, PREFIX_LENGTH: 0}
        flags: tuple[bool, ...] | None = None
        for name, sizes in per_method.items():
            used = {s for s in sizes if s}
            if len(used) > 1:
                raise ConfigError(f"{name}: differs across layers ({sorted(used)})")
            method_flags = tuple(bool(s) for s in sizes)
            if used and flags is not None and method_flags != flags:
                raise ConfigError("modules of the autopeft space share the same layers")
            if used:
                flags = method_flags
                point[name] = used.pop()
        if flags is None:
            raise ConfigError("config has no module: the autopeft space needs at least one")
        point.update({layer_parameter(i): int(f) for i, f in enumerate(flags)})
        decoded = self.decode(point)  # also checks the sizes are among the choices
        if decoded != config:
            raise ConfigError("config is not representable in this autopeft space "
                              "(scale or prefix settings differ)")
        return {p.name: point[p.name] for p in self.parameters()}


#: Every search space kind a study can name (a discriminated union as more are added).
SearchSpace = AutoPeftSpace


def point_key(point: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """A hashable, order-independent key of a point (a configuration of the space)."""
    return tuple(sorted((name, int(value)) for name, value in point.items()))
