"""He et al.'s unified view as a search space (He, Zhou, Ma, Berg-Kirkpatrick and Neubig,
"Towards a Unified View of Parameter-Efficient Transfer Learning", ICLR 2022).

Every method is a modification Δh = s · f(x W_down) W_up with a function, a position, a
form and a scale. Searched here, at the attention position and at the FFN position
independently:

* ``<position>_function``: ``none``, ``prefix`` (attention only: the gated parallel form),
  ``lora`` (the linear parallel form: query/value at attention, the FFN's two projections
  at the FFN, as in the paper's "LoRA (ffn)"), ``serial_adapter`` (sequential form, after
  the sublayer) or ``parallel_adapter`` (parallel form, beside the sublayer);
* ``<position>_size``: its rank, bottleneck or prefix length, an ordered choice (default
  {1, 2, 4, ..., 512} up to the hidden size);
* ``<position>_scale``: the scale s of the parallel forms, {1, 2, 4} (for LoRA s = alpha/r,
  i.e. ``alpha_per_rank``); ``<position>_learned_scale``: the parallel adapter's s is
  trained, starting at ``<position>_scale`` (the paper's learned-scale variant);
* ``layer_<i>``: insertion flags per layer, shared by both positions.

The parameters that a function does not use (the size of ``none``, the scale of a prefix
or serial adapter, the learned flag of anything but the parallel adapter) are inactive and
hold their first value. A point is valid with a layer on and a function at either position.

**Transfer to another backbone** (``transfer_point``, warm start): the flags map by
relative layer position (``base.layer_sources``), a target layer on when any of the
source layers meeting in it is on; each position keeps its function (both spaces offer
the same ones) and its learned-scale flag; sizes and scales keep their value when the
target offers it, else take the nearest choice in log scale (``base.nearest_choice``;
sizes are absolute ranks, bottlenecks and prefix lengths, not rescaled by width).

Well-known points: the MAM adapter (prefix at attention + scaled parallel adapter at the
FFN; GLUE settings l = 16, r = 16, s = 2; BART-large settings l = 30, r = 512, s = 4 in a
space whose attention sizes list 30), and the "scaled parallel adapter at the FFN" (s = 4).
Defaults as in AutoPEFT's space for the shared modules: prefix reparameterised by an MLP of
width 800 in training, ReLU adapters, parallel adapters zero-initialised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, Self

from pydantic import Field, StrictBool, StrictFloat, StrictInt, model_validator

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.methods import check_family
from autopeft_service.domain.peft_config import (
    LoraConfig,
    LoraTarget,
    ParallelAdapterConfig,
    PeftConfig,
    Position,
    PrefixConfig,
    SerialAdapterConfig,
)
from autopeft_service.domain.spaces.base import (
    MAX_CHOICES,
    MAX_LAYERS,
    MAX_SIZE,
    ParameterKind,
    ParamValue,
    SearchParameter,
    SearchSpaceBase,
    SizeChoice,
    check_choices,
    flag_parameters,
    layer_parameter,
    map_layers,
    nearest_choice,
)

NONE, PREFIX, LORA, SERIAL, PARALLEL = ("none", "prefix", "lora", "serial_adapter",
                                        "parallel_adapter")
#: Functions at each position, in parameter-value order (prefix tuning acts on attention).
FUNCTIONS: dict[Position, tuple[str, ...]] = {
    Position.ATTENTION: (NONE, PREFIX, LORA, SERIAL, PARALLEL),
    Position.FFN: (NONE, LORA, SERIAL, PARALLEL),
}
#: Projections LoRA adapts at each position.
LORA_TARGETS: dict[Position, tuple[LoraTarget, ...]] = {
    Position.ATTENTION: (LoraTarget.QUERY, LoraTarget.VALUE),
    Position.FFN: (LoraTarget.FFN_IN, LoraTarget.FFN_OUT),
}
_SCALED = (LORA, PARALLEL)


def unified_sizes(hidden_size: int) -> tuple[int, ...]:
    """Powers of two from 1 to 512, at most ``hidden_size``: (1, 2, ..., 256) for 384."""
    return tuple(2 ** k for k in range(10) if 2 ** k <= hidden_size)


def parameter(position: Position, what: str) -> str:
    """``attention_function``, ``ffn_size`` ..."""
    return f"{position.value}_{what}"


class UnifiedSpace(SearchSpaceBase):
    """Function, size and scale at the attention and FFN positions, plus per-layer flags."""

    kind: Literal["unified"] = "unified"
    num_layers: StrictInt = Field(gt=0, le=MAX_LAYERS)
    attention_sizes: tuple[SizeChoice, ...] = Field(
        min_length=1, max_length=MAX_CHOICES,
        description="Rank, bottleneck or prefix length choices at attention.")
    ffn_sizes: tuple[SizeChoice, ...] = Field(min_length=1, max_length=MAX_CHOICES,
                                       description="Rank or bottleneck choices at the FFN.")
    scales: tuple[Annotated[StrictFloat, Field(ge=1e-3, le=1000)], ...] = Field(
        (1.0, 2.0, 4.0), min_length=1, max_length=MAX_CHOICES,
                                      description="Scale choices of the parallel forms.")
    prefix_reparameterize: StrictBool = True
    prefix_mlp_width: StrictInt = Field(800, gt=0, le=MAX_SIZE)

    @model_validator(mode="after")
    def _check_choices(self) -> Self:
        check_choices("attention_sizes", self.attention_sizes, least=1)
        check_choices("ffn_sizes", self.ffn_sizes, least=1)
        check_choices("scales", self.scales, least=1e-3, most=1000)
        return self

    @classmethod
    def for_backbone(cls, dims: BackboneDims, **overrides: object) -> UnifiedSpace:
        """The default unified space for a backbone (sizes from ``unified_sizes``)."""
        sizes = unified_sizes(dims.hidden_size)
        values: dict[str, object] = {"num_layers": dims.num_layers, "attention_sizes": sizes,
                                     "ffn_sizes": sizes}
        values.update(overrides)
        return cls.model_validate(values)

    def _sizes(self, position: Position) -> tuple[int, ...]:
        return self.attention_sizes if position is Position.ATTENTION else self.ffn_sizes

    def build_parameters(self) -> list[SearchParameter]:
        """Layer flags, then per position: function, size, scale, learned scale."""
        out = flag_parameters(self.num_layers)
        for position in Position:
            out += [
                SearchParameter(name=parameter(position, "function"),
                                kind=ParameterKind.CATEGORICAL, values=FUNCTIONS[position]),
                SearchParameter(name=parameter(position, "size"), kind=ParameterKind.ORDINAL,
                                values=self._sizes(position)),
                SearchParameter(name=parameter(position, "scale"), kind=ParameterKind.ORDINAL,
                                values=self.scales),
                SearchParameter(name=parameter(position, "learned_scale"),
                                kind=ParameterKind.BINARY, values=(0, 1)),
            ]
        return out

    def inactive(self, point: Mapping[str, ParamValue]) -> set[str]:
        """Size unused by ``none``; scale unused but by LoRA and the parallel adapter; the
        learned flag unused but by the parallel adapter."""
        out: set[str] = set()
        for position in Position:
            function = point[parameter(position, "function")]
            if function == NONE:
                out.add(parameter(position, "size"))
            if function not in _SCALED:
                out.add(parameter(position, "scale"))
            if function != PARALLEL:
                out.add(parameter(position, "learned_scale"))
        return out

    def rule_error(self, point: Mapping[str, ParamValue]) -> str | None:
        """A layer on and a function at either position."""
        if not any(point[layer_parameter(i)] for i in range(self.num_layers)):
            return "layer_0: no layer is on: at least one layer_<i> must be 1"
        if all(point[parameter(p, "function")] == NONE for p in Position):
            return ("attention_function: none at both positions: one of attention_function "
                    "and ffn_function must name a method")
        return None

    def _transfer(self, point: Mapping[str, ParamValue],
                  source: SearchSpaceBase) -> dict[str, ParamValue] | None:
        """Flags by relative layer position (OR where layers meet); per position the same
        function and learned flag, size and scale to the nearest choice in log scale
        (module docstring).

        Args:
            point: a valid canonical point of ``source``.
            source: a unified space (``transfer_point`` checked the family).

        Returns:
            The point in this space (``transfer_point`` canonicalises it and checks it),
            or None when a value has no counterpart among this space's choices.
        """
        assert isinstance(source, UnifiedSpace)  # same kind, so same class
        flags = map_layers([int(point[layer_parameter(i)]) for i in range(source.num_layers)],
                           self.num_layers)
        out: dict[str, ParamValue] = {layer_parameter(j): flag for j, flag in enumerate(flags)}
        for p in self.parameters()[self.num_layers:]:  # the per-position parameters
            value = nearest_choice(point[p.name], p.values)
            if value is None:
                return None
            out[p.name] = value
        return out

    def _decode(self, point: Mapping[str, ParamValue]) -> PeftConfig:
        flags = [bool(point[layer_parameter(i)]) for i in range(self.num_layers)]
        serial: list[SerialAdapterConfig] = []
        parallel: list[ParallelAdapterConfig] = []
        lora: list[LoraConfig] = []
        prefix: PrefixConfig | None = None
        for position in Position:
            function = point[parameter(position, "function")]
            if function == NONE:
                continue
            size = int(point[parameter(position, "size")])
            sizes = tuple(size if on else 0 for on in flags)
            scale = float(point[parameter(position, "scale")])
            if function == PREFIX:
                prefix = PrefixConfig(lengths=sizes, reparameterize=self.prefix_reparameterize,
                                      mlp_width=self.prefix_mlp_width)
            elif function == LORA:
                lora.append(LoraConfig(ranks=sizes, targets=LORA_TARGETS[position],
                                       alpha_per_rank=scale))
            elif function == SERIAL:
                serial.append(SerialAdapterConfig(sizes=sizes, position=position))
            else:
                parallel.append(ParallelAdapterConfig(
                    sizes=sizes, position=position, scale=scale,
                    learned_scale=bool(point[parameter(position, "learned_scale")])))
        return PeftConfig(num_layers=self.num_layers, serial_adapters=tuple(serial),
                          parallel_adapters=tuple(parallel), lora=tuple(lora), prefix=prefix)

    def encode(self, config: PeftConfig) -> dict[str, ParamValue]:
        """The point whose ``decode`` is ``config``.

        Raises:
            ConfigError: ``config`` is outside this space: a method whose descriptor does
                not list the unified family (BitFit, (IA)^3), full fine-tuning, two methods
                at one position, sizes that differ across layers, methods on different
                layers, or a size or scale that is not among the choices.
        """
        if config.num_layers != self.num_layers:
            raise ConfigError(f"num_layers: config has {config.num_layers}, space has "
                              f"{self.num_layers}")
        check_family(config, self.kind)
        at: dict[Position, list[tuple[str, tuple[int, ...], float, int]]] = {
            position: [] for position in Position}
        for serial in config.serial_adapters:
            at[serial.position].append((SERIAL, serial.sizes, self.scales[0], 0))
        for parallel in config.parallel_adapters:
            at[parallel.position].append((PARALLEL, parallel.sizes, parallel.scale,
                                          int(parallel.learned_scale)))
        if config.prefix is not None:
            at[Position.ATTENTION].append((PREFIX, config.prefix.lengths, self.scales[0], 0))
        for lora in config.lora:
            position = next((p for p, targets in LORA_TARGETS.items()
                             if set(lora.targets) == set(targets)), None)
            if position is None:
                raise ConfigError(f"lora: targets {[t.value for t in lora.targets]} are not "
                                  "those of the unified space (query+value or ffn_in+ffn_out)")
            ranks = [r for r in lora.ranks if r]
            scale = lora.scaling(ranks[0]) if ranks else self.scales[0]
            at[position].append((LORA, lora.ranks, scale, 0))
        point: dict[str, ParamValue] = {}
        flags: tuple[bool, ...] | None = None
        for position, methods in at.items():
            methods = [m for m in methods if any(m[1])]
            if len(methods) > 1:
                raise ConfigError(f"{parameter(position, 'function')}: the unified space holds "
                                  f"one method per position, config has "
                                  f"{[m[0] for m in methods]}")
            if not methods:
                point[parameter(position, "function")] = NONE
                point[parameter(position, "size")] = self._sizes(position)[0]
                point[parameter(position, "scale")] = self.scales[0]
                point[parameter(position, "learned_scale")] = 0
                continue
            function, sizes, scale, learned = methods[0]
            used = {s for s in sizes if s}
            if len(used) > 1:
                raise ConfigError(f"{parameter(position, 'size')}: differs across layers "
                                  f"({sorted(used)})")
            layer_flags = tuple(bool(s) for s in sizes)
            if flags is not None and layer_flags != flags:
                raise ConfigError("layer_<i>: the positions' methods sit on different layers")
            flags = layer_flags
            point.update({parameter(position, "function"): function,
                          parameter(position, "size"): used.pop(),
                          parameter(position, "scale"): scale,
                          parameter(position, "learned_scale"): learned})
        if flags is None:
            raise ConfigError("config has no module: the unified space needs at least one")
        point.update({layer_parameter(i): int(f) for i, f in enumerate(flags)})
        point = self.canonical(point)
        decoded = self.decode(point)  # checks sizes and scales are among the choices
        if decoded != config:
            raise ConfigError("config is not representable in this unified space (adapter "
                              "activation, LoRA alpha or dropout, or prefix settings differ)")
        return {p.name: point[p.name] for p in self.parameters()}

    def size(self) -> int:
        """(2^L - 1) layer patterns times the position settings with a method somewhere."""
        def settings(position: Position) -> int:
            sizes, scales = len(self._sizes(position)), len(self.scales)
            per_function = {NONE: 1, PREFIX: sizes, LORA: sizes * scales, SERIAL: sizes,
                            PARALLEL: sizes * scales * 2}
            return sum(per_function[f] for f in FUNCTIONS[position])

        both = settings(Position.ATTENTION) * settings(Position.FFN) - 1
        return ((1 << self.num_layers) - 1) * both
