"""AutoPEFT's search space (Zhou et al., "AutoPEFT: Automatic Configuration Search for
Parameter-Efficient Fine-Tuning", TACL 2024).

For an L-layer backbone:
  * L binary insertion flags, one per layer, shared by the three modules;
  * the serial adapter bottleneck D_SA, the parallel adapter bottleneck D_PA and the
    prefix length L_PT, each an ordered choice of {0 (off), 1, hidden/2^k ...}.
That is L + 3 dimensions (15 for 12 layers, 27 for 24). A point is valid when at least
one layer is on and at least one module is on. Defaults as in the paper: serial adapter
at the FFN only, ReLU; parallel adapter beside the FFN with scale 4; prefix at
self-attention, reparameterised in training by an MLP of width 800.

**Serial adapter placement.** AutoPEFT's serial adapter is in **Pfeiffer** placement:
Zhou et al.'s released code (github.com/cambridgeltl/autopeft, commit 572dcaf) builds it
from ``AutoPEFTConfig`` (``adapter-transformers-adapters3.1.0/src/transformers/adapters/
configuration.py``: adapter-transformers' ``PfeifferConfig`` renamed, with
``original_ln_before=True``, ``residual_before_ln=True``, ``mh_adapter=False``,
``output_adapter=True``, ReLU), combined with the parallel adapter in ``modeling_sappa.py``
(``adapterhub/nas_search.py``, ``adapter_name == 'sappa'``): the serial adapter reads
LayerNorm(h + x), h the FFN output and x its input, adds back to h, and the FFN's
LayerNorm is applied again to that sum plus the parallel adapter's 4 x f(x) and x. This
space builds the serial adapter in **Houlsby** placement (``SerialAdapterConfig``: it reads
h before the residual and LayerNorm), the placement of He et al.'s sequential adapter. The
paper's text was not reachable from this project's tools beyond its abstract and
introduction, so the finding rests on the code. A Pfeiffer placement is not offered:
``docs/papers.md`` says why.

A point is ``{name: int}``: ``layer_<i>`` in {0, 1} and the three size parameters holding
the size itself (one of their choices). Every parameter is active at every point.

**Transfer to another backbone** (``transfer_point``, warm start): the flags map by
relative layer position (``base.layer_sources``), a target layer on when any of the
source layers meeting in it is on (6 -> 12 layers: [1, 0, 0, 0, 0, 1] becomes
[1, 1, 0, ..., 0, 1, 1]; 12 -> 6: pairs are OR-ed). Each size keeps its absolute value
when the target offers it, else takes the nearest choice in log scale, 0 (off) staying
0 (``base.nearest_choice``): the hidden/2^k grids of two widths share their small sizes,
and an absolute bottleneck is what the source measured (the space does not record its
hidden size, so sizes are not rescaled by width).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Self

from pydantic import Field, StrictBool, StrictFloat, StrictInt, model_validator

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.methods import check_family
from autopeft_service.domain.peft_config import (
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

SERIAL_ADAPTER_SIZE = "serial_adapter_size"
PARALLEL_ADAPTER_SIZE = "parallel_adapter_size"
PREFIX_LENGTH = "prefix_length"


def default_sizes(hidden_size: int) -> tuple[int, ...]:
    """AutoPEFT's size choices: 0 (off), 1, and hidden/2^k while it stays an integer >= 2.

    For hidden 768: (0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768); for 384: (0, 1, 3, ..., 384).
    """
    sizes = {0, 1}
    size: float = hidden_size
    while size >= 2 and size == int(size):
        sizes.add(int(size))
        size = size / 2
    return tuple(sorted(sizes))


class AutoPeftSpace(SearchSpaceBase):
    """AutoPEFT's space: per-layer flags + serial/parallel adapter sizes + prefix length.

    Build one for a backbone with ``AutoPeftSpace.for_backbone(dims)``.
    """

    kind: Literal["autopeft"] = "autopeft"
    num_layers: StrictInt = Field(gt=0, le=MAX_LAYERS)
    serial_adapter_sizes: tuple[SizeChoice, ...] = Field(min_length=1, max_length=MAX_CHOICES)
    parallel_adapter_sizes: tuple[SizeChoice, ...] = Field(min_length=1, max_length=MAX_CHOICES)
    prefix_lengths: tuple[SizeChoice, ...] = Field(min_length=1, max_length=MAX_CHOICES)
    parallel_adapter_scale: StrictFloat = Field(4.0, gt=0, le=1000)
    prefix_reparameterize: StrictBool = True
    prefix_mlp_width: StrictInt = Field(800, gt=0, le=MAX_SIZE)

    @model_validator(mode="after")
    def _check_choices(self) -> Self:
        for name in ("serial_adapter_sizes", "parallel_adapter_sizes", "prefix_lengths"):
            check_choices(name, getattr(self, name))
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

    def size(self) -> int:
        """Number of valid points: (2^L - 1) layer patterns with a layer on, times the size
        combinations with a module on (every combination but all-off)."""
        combinations = (len(self.serial_adapter_sizes) * len(self.parallel_adapter_sizes)
                        * len(self.prefix_lengths))
        all_off = all(0 in values for values in (
            self.serial_adapter_sizes, self.parallel_adapter_sizes, self.prefix_lengths))
        return ((1 << self.num_layers) - 1) * (combinations - int(all_off))

    def build_parameters(self) -> list[SearchParameter]:
        """Layer flags first, then the three sizes: layers + 3 parameters."""
        return flag_parameters(self.num_layers) + [
            SearchParameter(name=SERIAL_ADAPTER_SIZE, kind=ParameterKind.ORDINAL,
                            values=self.serial_adapter_sizes),
            SearchParameter(name=PARALLEL_ADAPTER_SIZE, kind=ParameterKind.ORDINAL,
                            values=self.parallel_adapter_sizes),
            SearchParameter(name=PREFIX_LENGTH, kind=ParameterKind.ORDINAL,
                            values=self.prefix_lengths),
        ]

    def rule_error(self, clean: Mapping[str, ParamValue]) -> str | None:
        """A layer on and a module on."""
        if not any(clean[layer_parameter(i)] for i in range(self.num_layers)):
            return "layer_0: no layer is on: at least one layer_<i> must be 1"
        if not (clean[SERIAL_ADAPTER_SIZE] or clean[PARALLEL_ADAPTER_SIZE] or clean[PREFIX_LENGTH]):
            return ("serial_adapter_size: no module is on: a size or the prefix length must "
                    "be > 0")
        return None

    def _transfer(self, point: Mapping[str, ParamValue],
                  source: SearchSpaceBase) -> dict[str, ParamValue] | None:
        """Flags by relative layer position (OR where layers meet), sizes to the nearest
        choice in log scale (module docstring).

        Args:
            point: a valid canonical point of ``source``.
            source: an AutoPEFT space (``transfer_point`` checked the family).

        Returns:
            The point in this space (``transfer_point`` checks it is valid).
        """
        assert isinstance(source, AutoPeftSpace)  # same kind, so same class
        flags = map_layers([int(point[layer_parameter(i)]) for i in range(source.num_layers)],
                           self.num_layers)
        out: dict[str, ParamValue] = {layer_parameter(j): flag for j, flag in enumerate(flags)}
        for name, choices in ((SERIAL_ADAPTER_SIZE, self.serial_adapter_sizes),
                              (PARALLEL_ADAPTER_SIZE, self.parallel_adapter_sizes),
                              (PREFIX_LENGTH, self.prefix_lengths)):
            size = nearest_choice(point[name], choices)
            if size is None:
                return None
            out[name] = size
        return out

    def _decode(self, clean: Mapping[str, ParamValue]) -> PeftConfig:
        flags = [clean[layer_parameter(i)] for i in range(self.num_layers)]

        def per_layer(size: int) -> tuple[int, ...]:
            return tuple(size if flag else 0 for flag in flags)

        serial, parallel, prefix = (int(clean[SERIAL_ADAPTER_SIZE]),
                                    int(clean[PARALLEL_ADAPTER_SIZE]), int(clean[PREFIX_LENGTH]))
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

    def encode(self, config: PeftConfig) -> dict[str, ParamValue]:
        """The point whose ``decode`` is ``config``.

        Raises:
            ConfigError: ``config`` is outside this space (a method whose descriptor does
                not list the autopeft family, per-layer sizes that differ, or modules that
                do not share the same layers).
        """
        if config.num_layers != self.num_layers:
            raise ConfigError(f"num_layers: config has {config.num_layers}, space has "
                              f"{self.num_layers}")
        check_family(config, self.kind)
        positions = [a.position for a in config.serial_adapters] + \
            [a.position for a in config.parallel_adapters]
        if any(position is not Position.FFN for position in positions):
            raise ConfigError("adapters of the autopeft space sit at the FFN")
        per_method: dict[str, tuple[int, ...]] = {}
        if config.serial_adapters:
            per_method[SERIAL_ADAPTER_SIZE] = config.serial_adapters[0].sizes
        if config.parallel_adapters:
            per_method[PARALLEL_ADAPTER_SIZE] = config.parallel_adapters[0].sizes
        if config.prefix is not None:
            per_method[PREFIX_LENGTH] = config.prefix.lengths
        point: dict[str, ParamValue] = {SERIAL_ADAPTER_SIZE: 0, PARALLEL_ADAPTER_SIZE: 0, PREFIX_LENGTH: 0}
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


