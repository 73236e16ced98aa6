"""Chen et al.'s PEFT design spaces as a search space (Chen, Zhang, Shi, Li, Smola and Yang,
"Parameter-Efficient Fine-Tuning Design Spaces", ICLR 2023).

A design is four choices:

* **layer grouping**: ``groups`` (G, 1 .. ``max_groups``) groups of consecutive layers sized
  by a ``pattern``: ``uniform`` (equal), ``increasing`` (fewer layers in the early groups:
  weights 1, 2, ..., G), ``decreasing`` (the reverse), ``spindle`` (fewer in the end groups,
  more in the middle: weights min(g + 1, G - g), e.g. 1, 2, 2, 1) or ``bottleneck`` (the
  reverse of spindle: 2, 1, 1, 2). Layers are apportioned to the weights by largest
  remainder with at least one layer per group (12 layers, G = 4: spindle 2, 4, 4, 2);
* **tunable groups**: ``group_<g>_tuned``;
* **strategy assignment**: per group a subset of {adapter, prefix, BitFit, LoRA}
  (``group_<g>_<strategy>`` flags). Adapter: serial bottleneck adapter after the FFN (ReLU);
  prefix: prefix tuning at self-attention (reparameterised in training, counted deployed);
  LoRA: on query and value (alpha/r = 2); BitFit: the layer's biases;
* **trainable parameter allocation**: a total ``budget`` in percent of the backbone's
  parameters, allocated to the tuned layers ``uniform``-ly, ``increasing``-ly (weight = the
  layer's rank among the tuned layers, 1 .. T) or ``decreasing``-ly (T .. 1).

Decoding the budget into sizes (the rounding, so that the decoded share never exceeds the
budget): the budget is B = floor(budget% x total / 100) deployed parameters; tuned layer l
gets b_l = floor(B w_l / sum w). In a layer, BitFit (a fixed 7d + f on BERT) is paid first
when it is assigned and fits b_l, otherwise it is dropped there; what remains is split
equally (floor) among the layer's sized strategies, and each takes the largest size whose
deployed count fits its part: adapter r = floor((a - d) / (2d + 1)), prefix length
floor(a / 2d), LoRA rank floor(a / (2 x 2d)) (on a grouped-query decoder the key/value
width replaces d where keys and values are counted); a size of 0 drops the module there.
Every count is floored, so the sum is at most B. A point whose budget is too small for any
module is invalid, and so is BitFit on a backbone whose layers have no bias (Llama).

Inactive parameters (first value in the canonical form): ``pattern`` when G = 1 (one group
has no shape); every flag of groups g >= G; the strategies of an untuned group. Valid: a
tuned group with a strategy in each tuned group, G at most the number of layers, and a
non-empty decoded configuration.

The paper's discovered design (G = 4, spindle, uniform allocation, all groups tuned, a
strategy mix per group) is a point: ``discovered_design`` gives it, with the per-group
strategies as we read the paper (G1 adapter + LoRA, G2 adapter + prefix, G3 adapter +
prefix + LoRA, G4 prefix + BitFit + LoRA).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, StrictFloat, StrictInt, model_validator

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.methods import check_family, lora_target_shape
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import (
    BitFitConfig,
    LoraConfig,
    LoraTarget,
    PeftConfig,
    Position,
    PrefixConfig,
    SerialAdapterConfig,
)
from autopeft_service.domain.spaces.base import (
    MAX_CHOICES,
    ParameterKind,
    ParamValue,
    SearchParameter,
    SearchSpaceBase,
    check_choices,
)
from autopeft_service.domain.validation import FieldError

PATTERNS = ("uniform", "increasing", "decreasing", "spindle", "bottleneck")
ALLOCATIONS = ("uniform", "increasing", "decreasing")
STRATEGIES = ("adapter", "prefix", "bitfit", "lora")
#: Budget choices, percent of the backbone's parameters.
DEFAULT_BUDGETS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
#: LoRA's scale alpha / r in this family (Hu et al.'s r = 8, alpha = 16).
LORA_ALPHA_PER_RANK = 2.0
_LORA_TARGETS = (LoraTarget.QUERY, LoraTarget.VALUE)


def group_parameter(group: int, what: str) -> str:
    """``group_0_tuned``, ``group_2_lora`` ..."""
    return f"group_{group}_{what}"


def pattern_weights(pattern: str, groups: int) -> list[int]:
    """Relative group sizes of a grouping pattern (module docstring)."""
    if pattern == "uniform":
        return [1] * groups
    if pattern == "increasing":
        return list(range(1, groups + 1))
    if pattern == "decreasing":
        return list(range(groups, 0, -1))
    spindle = [min(g + 1, groups - g) for g in range(groups)]
    if pattern == "spindle":
        return spindle
    if pattern == "bottleneck":
        return [max(spindle) + 1 - w for w in spindle]
    raise ValueError(f"unknown pattern {pattern!r}")


def group_layers(num_layers: int, groups: int, pattern: str) -> list[range]:
    """Consecutive layer ranges of the groups: largest remainder, at least one layer each.

    Raises:
        ValueError: more groups than layers.
    """
    if groups > num_layers:
        raise ValueError(f"{groups} groups exceed {num_layers} layers")
    weights = pattern_weights(pattern, groups)
    spare = num_layers - groups  # one layer each first, the rest by weight
    quotas = [spare * w / sum(weights) for w in weights]
    counts = [1 + math.floor(q) for q in quotas]
    order = sorted(range(groups), key=lambda g: (-(quotas[g] - math.floor(quotas[g])), g))
    for g in order[:num_layers - sum(counts)]:
        counts[g] += 1
    out, start = [], 0
    for count in counts:
        out.append(range(start, start + count))
        start += count
    return out


class DesignSpace(SearchSpaceBase):
    """Grouping, tunable groups, strategies per group and a budget (module docstring).

    ``backbone`` is needed to turn the budget into sizes; a study fills it from its
    ``backbone_dims``.
    """

    kind: Literal["design_space"] = "design_space"
    dimension_field: ClassVar[str] = "max_groups"
    injective: ClassVar[bool] = False
    backbone: BackboneDims
    max_groups: StrictInt = Field(4, ge=1, le=8, description="Largest G searched.")
    budgets: tuple[Annotated[StrictFloat, Field(ge=1e-4, le=100)], ...] = Field(
        DEFAULT_BUDGETS, min_length=1, max_length=MAX_CHOICES,
                                       description="Budget choices, percent of the backbone.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_choices("budgets", self.budgets, least=1e-4, most=100)
        if self.max_groups > self.backbone.num_layers:
            raise FieldError("max_groups", f"{self.max_groups} exceeds the backbone's "
                             f"{self.backbone.num_layers} layers")
        return self

    @classmethod
    def for_backbone(cls, dims: BackboneDims, **overrides: object) -> DesignSpace:
        """The default design space for a backbone (G up to min(4, layers))."""
        values: dict[str, object] = {"backbone": dims, "max_groups": min(4, dims.num_layers)}
        values.update(overrides)
        return cls.model_validate(values)

    @property
    def num_layers(self) -> int:
        """Layers of the backbone."""
        return self.backbone.num_layers

    def build_parameters(self) -> list[SearchParameter]:
        """G, pattern, per group (tuned + four strategies), budget, allocation."""
        out = [SearchParameter(name="groups", kind=ParameterKind.ORDINAL,
                               values=tuple(range(1, self.max_groups + 1))),
               SearchParameter(name="pattern", kind=ParameterKind.CATEGORICAL, values=PATTERNS)]
        for g in range(self.max_groups):
            out += [SearchParameter(name=group_parameter(g, what), kind=ParameterKind.BINARY,
                                    values=(0, 1)) for what in ("tuned", *STRATEGIES)]
        return out + [
            SearchParameter(name="budget", kind=ParameterKind.ORDINAL, values=self.budgets),
            SearchParameter(name="allocation", kind=ParameterKind.CATEGORICAL,
                            values=ALLOCATIONS)]

    def inactive(self, point: Mapping[str, ParamValue]) -> set[str]:
        """Pattern at G = 1; flags of groups beyond G; strategies of untuned groups."""
        groups = int(point["groups"])
        out = {"pattern"} if groups == 1 else set()
        for g in range(self.max_groups):
            if g >= groups:
                out |= {group_parameter(g, w) for w in ("tuned", *STRATEGIES)}
            elif not point[group_parameter(g, "tuned")]:
                out |= {group_parameter(g, s) for s in STRATEGIES}
        return out

    def rule_error(self, point: Mapping[str, ParamValue]) -> str | None:
        """A tuned group, a strategy in each tuned group, and a non-empty decoded config."""
        groups = int(point["groups"])
        tuned = [g for g in range(groups) if point[group_parameter(g, "tuned")]]
        if not tuned:
            return "group_0_tuned: no group is tuned: at least one group_<g>_tuned must be 1"
        for g in tuned:
            if not any(point[group_parameter(g, s)] for s in STRATEGIES):
                return (f"group_{g}_tuned: a tuned group needs a strategy (one of "
                        f"{', '.join(group_parameter(g, s) for s in STRATEGIES)})")
        _, short = self._allocate(point)
        if short is not None:
            return short
        return None

    def _decode(self, point: Mapping[str, ParamValue]) -> PeftConfig:
        return self._build(point)

    def _build(self, point: Mapping[str, ParamValue]) -> PeftConfig:
        return self._allocate(point)[0]

    def _allocate(self, point: Mapping[str, ParamValue]) -> tuple[PeftConfig, str | None]:
        """The configuration of a point, and why it is invalid when the budget leaves a
        chosen strategy with nothing in some tuned layer (then the design would silently
        differ from what it names)."""
        dims = self.backbone
        d, n = dims.hidden_size, dims.num_layers
        biases = dims.layer_bias_parameters  # what BitFit trains per layer (0: refused)
        lora_per_rank = sum(sum(lora_target_shape(t, dims)) for t in _LORA_TARGETS)
        groups = int(point["groups"])
        ranges = group_layers(n, groups, str(point["pattern"]) if groups > 1 else "uniform")
        strategies: list[tuple[str, ...]] = [()] * n
        for g, layers in enumerate(ranges):
            if point[group_parameter(g, "tuned")]:
                chosen = tuple(s for s in STRATEGIES if point[group_parameter(g, s)])
                for i in layers:
                    strategies[i] = chosen
        tuned = [i for i in range(n) if strategies[i]]
        allocation = str(point["allocation"])
        weights = {i: 1 if allocation == "uniform" else
                   (rank + 1 if allocation == "increasing" else len(tuned) - rank)
                   for rank, i in enumerate(tuned)}
        total = sum(weights.values())
        budget = math.floor(float(point["budget"]) * dims.total_parameters / 100)
        adapter, prefix, lora = [0] * n, [0] * n, [0] * n
        bitfit = [False] * n
        short: str | None = None
        unsupported: str | None = None
        for i in tuned:
            allotment = budget * weights[i] // total
            if "bitfit" in strategies[i]:
                if not biases:
                    unsupported = unsupported or f"bitfit in layer {i}"
                elif allotment >= biases:
                    bitfit[i] = True
                    allotment -= biases
                else:
                    short = short or f"bitfit in layer {i}"
            sized = [s for s in strategies[i] if s != "bitfit"]
            if not sized:
                continue
            part = allotment // len(sized)
            if "adapter" in sized:
                adapter[i] = max(0, (part - d) // (2 * d + 1))
            if "prefix" in sized:
                prefix[i] = part // (2 * dims.kv_size)
            if "lora" in sized:
                lora[i] = part // lora_per_rank
            for name, sizes in (("adapter", adapter), ("prefix", prefix), ("lora", lora)):
                if name in sized and not sizes[i]:
                    short = short or f"{name} in layer {i}"
        problem = None if short is None else (
            f"budget: {point['budget']} % is too small for this design ({short} would get "
            "nothing)")
        if unsupported is not None:
            problem = (f"{unsupported}: the {dims.model_type} backbone's layers have no bias "
                       "terms, so BitFit is not a strategy here")
        config = PeftConfig(
            num_layers=n,
            serial_adapters=(SerialAdapterConfig(sizes=tuple(adapter), position=Position.FFN),)
            if any(adapter) else (),
            prefix=PrefixConfig(lengths=tuple(prefix)) if any(prefix) else None,
            lora=(LoraConfig(ranks=tuple(lora), targets=_LORA_TARGETS,
                             alpha_per_rank=LORA_ALPHA_PER_RANK),) if any(lora) else (),
            bitfit=BitFitConfig(layers=tuple(bitfit)) if any(bitfit) else None)
        return config, problem

    def budget_parameters(self, point: Mapping[str, ParamValue]) -> int:
        """The budget B of a point in deployed parameters (its decoded count is at most B)."""
        return math.floor(float(point["budget"]) * self.backbone.total_parameters / 100)

    def encode(self, config: PeftConfig) -> dict[str, ParamValue]:
        """A point whose ``decode`` is ``config``: the first found trying every grouping
        (fewest groups first, patterns in ``PATTERNS`` order), budget and allocation with
        the per-group strategies read from ``config`` (a design's sizes are a function of
        those choices, so there is no closed-form inverse). Several points can decode to
        one configuration (the family is not injective); this is their representative, so
        ``encode(decode(encode(c))) == encode(c)``.

        Raises:
            ConfigError: ``config`` holds a method whose descriptor does not list the
                design_space family, or no point of the space decodes to it.
        """
        if config.num_layers != self.num_layers:
            raise ConfigError(f"num_layers: config has {config.num_layers}, space has "
                              f"{self.num_layers}")
        check_family(config, self.kind)
        for groups in range(1, self.max_groups + 1):
            for pattern in (PATTERNS if groups > 1 else PATTERNS[:1]):
                ranges = group_layers(self.num_layers, groups, pattern)
                flags = self._strategies_by_group(config, ranges)
                if flags is None:
                    continue
                for budget in self.budgets:
                    for allocation in ALLOCATIONS:
                        point = self.canonical({"groups": groups, "pattern": pattern, **flags,
                                                "budget": budget, "allocation": allocation})
                        if self.is_valid(point) and self._build(point) == config:
                            return {p.name: point[p.name] for p in self.parameters()}
        raise ConfigError("config is not a point of this design space (no grouping, budget "
                          "and allocation decodes to it)")

    def _strategies_by_group(self, config: PeftConfig,
                             ranges: list[range]) -> dict[str, ParamValue] | None:
        """Group flags read from ``config`` for this grouping (``None``: a group's layers
        disagree on whether they are tuned)."""
        per_layer: list[set[str]] = [set() for _ in range(self.num_layers)]
        for adapter in config.serial_adapters:
            for i, size in enumerate(adapter.sizes):
                if size:
                    per_layer[i].add("adapter")
        if config.prefix is not None:
            for i, length in enumerate(config.prefix.lengths):
                if length:
                    per_layer[i].add("prefix")
        for lora in config.lora:
            for i, rank in enumerate(lora.ranks):
                if rank:
                    per_layer[i].add("lora")
        if config.bitfit is not None:
            for i, on in enumerate(config.bitfit.layers):
                if on:
                    per_layer[i].add("bitfit")
        out: dict[str, ParamValue] = {}
        for g in range(self.max_groups):
            layers = ranges[g] if g < len(ranges) else range(0)
            used = set().union(*(per_layer[i] for i in layers)) if layers else set()
            if used and not all(per_layer[i] for i in layers):
                return None
            out[group_parameter(g, "tuned")] = int(bool(used))
            out.update({group_parameter(g, s): int(s in used) for s in STRATEGIES})
        return out

    def size(self) -> int:
        """Structurally valid points: per G, (patterns) x (16^G - 1 group settings with a
        tuned group: untuned, or tuned with one of 15 strategy sets) x budgets x allocations.
        Points whose budget rounds every size to 0 are counted too (an upper bound)."""
        total = 0
        for groups in range(1, self.max_groups + 1):
            patterns = 1 if groups == 1 else len(PATTERNS)
            total += patterns * (16 ** groups - 1)
        return total * len(self.budgets) * len(ALLOCATIONS)

    def discovered_design(self, budget: float | None = None) -> dict[str, ParamValue]:
        """Chen et al.'s discovered design at ``budget`` (default: the median choice).

        Raises:
            ConfigError: the space cannot hold it (fewer than 4 groups or layers).
        """
        if self.max_groups < 4:
            raise ConfigError("max_groups: the discovered design has 4 groups")
        mix = [("adapter", "lora"), ("adapter", "prefix"), ("adapter", "prefix", "lora"),
               ("prefix", "bitfit", "lora")]
        point: dict[str, ParamValue] = {
            "groups": 4, "pattern": "spindle", "allocation": "uniform",
            "budget": budget if budget is not None else self.budgets[len(self.budgets) // 2]}
        for g in range(self.max_groups):
            point[group_parameter(g, "tuned")] = int(g < 4)
            point.update({group_parameter(g, s): int(g < 4 and s in mix[g])
                          for s in STRATEGIES})
        return self.canonical(point)


def decoded_share_within_budget(space: DesignSpace, point: Mapping[str, ParamValue]) -> bool:
    """True when the decoded configuration's deployed count is at most the point's budget."""
    deployed = count_parameters(space.decode(point), space.backbone).deployed
    return deployed <= space.budget_parameters(point)


__all__ = ["ALLOCATIONS", "PATTERNS", "STRATEGIES", "DesignSpace",
           "decoded_share_within_budget", "group_layers", "pattern_weights"]
