"""Chen et al.'s PEFT design spaces as a search space (Chen, Zhang, Shi, Li, Smola and Yang,
"Parameter-Efficient Fine-Tuning Design Spaces", ICLR 2023).

A design is four choices:

* **layer grouping**: ``groups`` (G, 1 .. ``max_groups``) groups of consecutive layers sized
  by a ``pattern``: ``uniform`` (equal), ``increasing`` (fewer layers in the early groups:
  weights 1, 2, ..., G), ``decreasing`` (the reverse), ``spindle`` (fewer in the end groups,
  more in the middle: weights min(g + 1, G - g), e.g. 1, 2, 2, 1) or ``bottleneck`` (the
  reverse of spindle: 2, 1, 1, 2). The L layers are apportioned to the weights by largest
  remainder (Hamilton) on the whole depth: group g's quota is L w_g / sum w, each group
  gets the floor of its quota but at least one layer (paid for by the group furthest above
  its quota), and the layers left go to the largest remainders, ties to the heavier group,
  then the earlier one (12 layers, G = 4: spindle 2, 4, 4, 2; increasing 1, 2, 4, 5).

  **A pattern is offered at (L, G) only where its grouping has the pattern's shape**, and
  the shapes exclude one another, so two offered patterns never give the same grouping
  (the old rule, one layer each and the rest by weight, made uniform = decreasing =
  [2, 2, 1, 1] on 6 layers and 4 groups). The shapes: ``uniform``, all groups equal (G
  divides L); ``increasing``, sizes never fall and the last group is larger than the first
  (L > G); ``decreasing``, the mirror; ``spindle``, G >= 3, sizes rise then fall and both
  end groups are smaller than the largest (L > G); ``bottleneck``, G >= 3, sizes fall then
  rise and both ends are larger than the smallest (L >= G + 2). Largest remainder reaches
  the shape whenever one exists (tested for L up to 48 and G up to 8). A point whose
  pattern is not offered at its G is invalid, and its error names ``pattern`` (6 layers,
  G = 4: increasing 1, 1, 2, 2; decreasing 2, 2, 1, 1; spindle 1, 2, 2, 1; bottleneck
  2, 1, 1, 2; no uniform, since 4 equal groups of 6 layers do not exist). ``patterns``
  lists the patterns searched: by default every one offered at some G in 2 .. max_groups
  on this depth (all five once max_groups >= 3 and the depth allows them); a pattern named
  in ``patterns`` that no such G offers is refused (HTTP 422 naming ``patterns``);
* **tunable groups**: ``group_<g>_tuned``;
* **strategy assignment**: per group a subset of {adapter, prefix, BitFit, LoRA}
  (``group_<g>_<strategy>`` flags). Adapter: serial bottleneck adapter on the FFN output,
  Houlsby placement (ReLU);
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
pattern offered at G, a tuned group with a strategy in each tuned group, G at most the
number of layers, and a non-empty decoded configuration.

**Transfer to another backbone** (``transfer_point``, warm start): a design is already
written in relative terms (G groups of a pattern's shape over the whole depth, a budget in
percent, an allocation rule), so it carries over whole: the same ``groups``, ``pattern``,
group flags (tuned, strategies), ``allocation``, and the budget's nearest choice in log
scale (``base.nearest_choice``; the same percent when offered). The groups then fall on the
target's layers by the same pattern, which is the relative-position mapping. A design has
no counterpart (None) when the target cannot hold it: G above its ``max_groups``, the
pattern not offered at G on its depth (uniform 4 groups of 12 layers going to 6) or not in
its ``patterns``, or a point the target refuses (the budget too small for a strategy on
this backbone, BitFit on a backbone without biases). Group counts are not merged or split:
a group's strategies are a design choice, not a per-layer quantity.

The paper's discovered design (G = 4, spindle, uniform allocation, all groups tuned, a
strategy mix per group) is a point: ``discovered_design`` gives it, with the per-group
strategies **as we read the paper, unverified**: G1 adapter + LoRA, G2 adapter + prefix,
G3 adapter + prefix + LoRA, G4 prefix + BitFit + LoRA. Issue 30 asked for this reading to
be checked against Chen et al. (arXiv 2301.01821, ICLR 2023) with the page cited; that
check could not be made here. The stored copies of the paper reachable from this
project's tools (arXiv/ar5iv, the ICLR text, SPIQA's LaTeX source) give only their
opening (abstract and introduction), which state the four patterns (spindle grouping,
uniform allocation, all groups tuned, "proper" strategies per group) but not which
strategies each group gets; the released code (github.com/amazon-science/peft-design-spaces,
commit e3e8cee) has no per-group assignment either: its ``PEFT`` adapter config
(``models/transformers/parameter-efficient-finetuning/configuration.py``) is a union of
prefix tuning (length 10), a Pfeiffer adapter (reduction 16) and LoRA (r = 8), each gated,
in every layer. In particular whether G3 holds LoRA or BitFit is unverified
(``docs/papers.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal, Self, get_args

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
    nearest_choice,
)
from autopeft_service.domain.validation import FieldError

PatternName = Literal["uniform", "increasing", "decreasing", "spindle", "bottleneck"]
PATTERNS: tuple[str, ...] = get_args(PatternName)
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


def _apportion(num_layers: int, weights: list[int]) -> list[int]:
    """Largest remainder on the whole depth, at least one layer a group (module docstring)."""
    total = sum(weights)
    quotas = [num_layers * w / total for w in weights]
    counts = [max(1, math.floor(q)) for q in quotas]
    while sum(counts) > num_layers:  # the groups raised to one layer are paid for
        g = max((g for g, c in enumerate(counts) if c > 1),
                key=lambda g: (counts[g] - quotas[g], -weights[g], g))
        counts[g] -= 1
    order = sorted(range(len(weights)), key=lambda g: (counts[g] - quotas[g], -weights[g], g))
    for g in order[:num_layers - sum(counts)]:
        counts[g] += 1
    return counts


def _rises(sizes: list[int]) -> bool:
    return all(a <= b for a, b in zip(sizes, sizes[1:], strict=False))


def has_shape(pattern: str, sizes: list[int]) -> bool:
    """Whether group sizes have a pattern's shape (module docstring); the shapes exclude
    one another, so no grouping has two."""
    if pattern == "uniform":
        return len(set(sizes)) == 1
    if pattern == "increasing":
        return _rises(sizes) and sizes[0] < sizes[-1]
    if pattern == "decreasing":
        return _rises(sizes[::-1]) and sizes[0] > sizes[-1]
    if len(sizes) < 3:
        return False
    if pattern == "spindle":
        top = sizes.index(max(sizes))
        return (_rises(sizes[:top + 1]) and _rises(sizes[top:][::-1])
                and max(sizes[0], sizes[-1]) < sizes[top])
    if pattern == "bottleneck":
        low = sizes.index(min(sizes))
        return (_rises(sizes[:low + 1][::-1]) and _rises(sizes[low:])
                and min(sizes[0], sizes[-1]) > sizes[low])
    raise ValueError(f"unknown pattern {pattern!r}")


def pattern_error(num_layers: int, groups: int, pattern: str) -> str | None:
    """Why ``pattern`` cannot group ``num_layers`` layers into ``groups`` groups, or None.

    One group has no shape (any pattern: None). Otherwise the pattern is offered only where
    its grouping has its shape, so offered patterns never coincide (module docstring).

    Raises:
        ValueError: an unknown pattern.
    """
    weights = pattern_weights(pattern, groups)
    if groups > num_layers:
        return f"{groups} groups exceed {num_layers} layers"
    if groups == 1:
        return None
    if has_shape(pattern, _apportion(num_layers, weights)):
        return None
    if pattern == "uniform":
        return (f"uniform needs {groups} equal groups, and {groups} does not divide "
                f"{num_layers} layers")
    if pattern in ("spindle", "bottleneck") and groups < 3:
        return f"{pattern} needs at least 3 groups (two ends and a middle), got {groups}"
    least = groups + (2 if pattern == "bottleneck" else 1)
    return (f"{pattern} cannot shape {num_layers} layers into {groups} groups (it needs at "
            f"least {least} layers)")


def offered_patterns(num_layers: int, groups: int) -> tuple[str, ...]:
    """The patterns that can group ``num_layers`` layers into ``groups`` groups."""
    return tuple(p for p in PATTERNS if pattern_error(num_layers, groups, p) is None)


def group_layers(num_layers: int, groups: int, pattern: str) -> list[range]:
    """Consecutive layer ranges of the groups (largest remainder, at least one layer each).

    Raises:
        ValueError: more groups than layers, or a pattern not offered at this depth and
            group count (``pattern_error``): a pattern never stands in for another.
    """
    error = pattern_error(num_layers, groups, pattern)
    if error is not None:
        raise ValueError(error)
    counts = [num_layers] if groups == 1 else _apportion(num_layers,
                                                         pattern_weights(pattern, groups))
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
    patterns: tuple[PatternName, ...] | None = Field(
        None, min_length=1, max_length=len(PATTERNS),
        description="Grouping patterns searched; default: every pattern some group count "
        "2 .. max_groups can shape on this depth. A pattern is offered at a group count "
        "only where its grouping has its shape, so no two give the same groups.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_choices("budgets", self.budgets, least=1e-4, most=100)
        if self.max_groups > self.backbone.num_layers:
            raise FieldError("max_groups", f"{self.max_groups} exceeds the backbone's "
                             f"{self.backbone.num_layers} layers")
        if self.patterns is not None:
            if len(set(self.patterns)) != len(self.patterns):
                raise FieldError("patterns", f"each pattern once, got {list(self.patterns)}")
            counts = range(2, self.max_groups + 1)
            for pattern in self.patterns:
                if not any(pattern_error(self.num_layers, g, pattern) is None for g in counts):
                    why = "; ".join(f"G = {g}: {pattern_error(self.num_layers, g, pattern)}"
                                    for g in counts) or "max_groups 1 has no pattern"
                    raise FieldError("patterns", f"{pattern} is offered at no group count of "
                                     f"this space on {self.num_layers} layers ({why})")
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

    @property
    def pattern_choices(self) -> tuple[str, ...]:
        """The ``pattern`` parameter's values: ``patterns``, or by default every pattern
        offered at some G in 2 .. max_groups (``uniform`` alone when max_groups is 1, where
        the pattern is never active)."""
        if self.patterns is not None:
            return tuple(self.patterns)
        counts = range(2, self.max_groups + 1)
        offered = tuple(p for p in PATTERNS
                        if any(pattern_error(self.num_layers, g, p) is None for g in counts))
        return offered or PATTERNS[:1]

    def build_parameters(self) -> list[SearchParameter]:
        """G, pattern, per group (tuned + four strategies), budget, allocation."""
        out = [SearchParameter(name="groups", kind=ParameterKind.ORDINAL,
                               values=tuple(range(1, self.max_groups + 1))),
               SearchParameter(name="pattern", kind=ParameterKind.CATEGORICAL,
                               values=self.pattern_choices)]
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
        """A pattern offered at G, a tuned group, a strategy in each tuned group, and a
        non-empty decoded config."""
        groups = int(point["groups"])
        shape = pattern_error(self.num_layers, groups, str(point["pattern"]))
        if shape is not None:
            return f"pattern: {shape}"
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

    def _transfer(self, point: Mapping[str, ParamValue],
                  source: SearchSpaceBase) -> dict[str, ParamValue] | None:
        """The same design on this backbone, the budget at its nearest choice in log scale;
        None when this space cannot hold it (module docstring).

        Args:
            point: a valid canonical point of ``source``.
            source: a design space (``transfer_point`` checked the family).

        Returns:
            The point in this space (``transfer_point`` checks the pattern is offered at G
            on this depth and the budget suffices), or None when G exceeds ``max_groups``
            or the pattern is not among this space's choices.
        """
        assert isinstance(source, DesignSpace)  # same kind, so same class
        groups = int(point["groups"])
        if groups > self.max_groups:
            return None
        pattern = point["pattern"]
        if groups > 1 and pattern not in self.pattern_choices:
            return None
        budget = nearest_choice(point["budget"], self.budgets)
        if budget is None:
            return None
        out: dict[str, ParamValue] = {
            "groups": groups, "budget": budget, "allocation": point["allocation"],
            # At G = 1 the pattern is inactive: any choice, canonical form sets the first.
            "pattern": pattern if groups > 1 else self.pattern_choices[0]}
        for g in range(self.max_groups):
            for what in ("tuned", *STRATEGIES):
                name = group_parameter(g, what)
                out[name] = point[name] if g < groups else 0
        return out

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
        ranges = group_layers(n, groups, str(point["pattern"]))
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
        (fewest groups first, the offered patterns in ``pattern_choices`` order), budget and
        allocation with
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
            for pattern in self.pattern_choices[:1 if groups == 1 else None]:
                if pattern_error(self.num_layers, groups, pattern) is not None:
                    continue
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
        """Structurally valid points: per G, (the patterns offered at G) x (16^G - 1 group
        settings with a tuned group: untuned, or tuned with one of 15 strategy sets) x
        budgets x allocations. Points whose budget rounds every size to 0 are counted too
        (an upper bound)."""
        total = 0
        for groups in range(1, self.max_groups + 1):
            patterns = 1 if groups == 1 else sum(
                pattern_error(self.num_layers, groups, p) is None for p in self.pattern_choices)
            total += patterns * (16 ** groups - 1)
        return total * len(self.budgets) * len(ALLOCATIONS)

    def discovered_design(self, budget: float | None = None) -> dict[str, ParamValue]:
        """Chen et al.'s discovered design at ``budget`` (default: the median choice).

        Raises:
            ConfigError: the space cannot hold it (fewer than 4 groups, or no spindle of 4
                groups on this depth or in ``patterns``).
        """
        if self.max_groups < 4:
            raise ConfigError("max_groups: the discovered design has 4 groups")
        spindle = pattern_error(self.num_layers, 4, "spindle")
        if spindle is not None or "spindle" not in self.pattern_choices:
            raise ConfigError(f"pattern: the discovered design is a spindle of 4 groups "
                              f"({spindle or 'patterns leaves spindle out'})")
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


__all__ = ["ALLOCATIONS", "PATTERNS", "STRATEGIES", "DesignSpace", "PatternName",
           "decoded_share_within_budget", "group_layers", "has_shape", "offered_patterns",
           "pattern_error", "pattern_weights"]
