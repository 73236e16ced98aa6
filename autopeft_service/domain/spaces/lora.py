"""A LoRA search space (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
ICLR 2022): where LoRA goes and how large, the space most users ask for first.

Searched:

* ranks, at the ``granularity`` the study chooses: one ``rank`` for all layers (``all``),
  one ``rank_group_<g>`` per group of consecutive layers (``groups``; ``num_groups`` groups
  as equal as possible, the first ones one layer larger when L is not a multiple), or one
  ``rank_layer_<i>`` per layer (``layer``); each an ordered choice that includes 0 (absent)
  by default: (0, 1, 2, 4, 8, 16, 32, 64);
* ``target_<projection>``: a flag per projection of ``targets`` (default: query, key,
  value, attention_output, ffn_in, ffn_out; for a Llama-family decoder ``for_backbone`` adds
  ffn_gate: all seven projections);
* ``alpha_per_rank``: the update's scale alpha/r, the same in every layer, an ordered
  choice, default (0.5, 1, 2, 4); Hu et al.'s r = 8 with alpha = 16 is 2.

A point is valid with a target on and a rank above 0 somewhere. Every parameter is active.
LoRA r = 8 on query and value (alpha 16) is a point at every granularity.

**Transfer to another backbone** (``transfer_point``, warm start):

* ranks move by relative position and the larger rank wins where several meet: at
  ``layer`` granularity layer by layer (``base.layer_sources``: 6 -> 12 layers copies
  each rank to two layers, 12 -> 6 keeps the larger of each pair); at ``groups``
  granularity on both sides, group by group with the groups as the units of the same rule
  (equal group counts: group g is group g, whatever the depths); at ``all``, the one rank.
  Between two granularities, the source's per-layer ranks map layer by layer and each
  target rank parameter takes the largest over its layers. Each rank then takes the
  nearest choice in log scale (``base.nearest_choice``; 0, absent, stays 0);
* a target flag carries over for every projection both spaces search; a projection only
  the source searches is dropped (``ffn_gate`` going to an encoder), one only the target
  searches is off (no counterpart is left when no searched projection stays on);
* ``alpha_per_rank`` takes the nearest choice in log scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, StrictFloat, StrictInt, model_validator

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.methods import check_family
from autopeft_service.domain.peft_config import LoraConfig, LoraTarget, PeftConfig
from autopeft_service.domain.spaces.base import (
    MAX_CHOICES,
    MAX_LAYERS,
    ParameterKind,
    ParamValue,
    SearchParameter,
    SearchSpaceBase,
    SizeChoice,
    check_choices,
    layer_sources,
    map_layers,
    nearest_choice,
)
from autopeft_service.domain.validation import FieldError

DEFAULT_RANKS = (0, 1, 2, 4, 8, 16, 32, 64)
#: Projections every architecture has (a gated FFN adds ``ffn_gate``).
COMMON_TARGETS = tuple(t for t in LoraTarget if t is not LoraTarget.FFN_GATE)
DEFAULT_ALPHA_PER_RANK = (0.5, 1.0, 2.0, 4.0)


def target_parameter(target: LoraTarget) -> str:
    """``target_query`` ..."""
    return f"target_{target.value}"


def consecutive_groups(num_layers: int, num_groups: int) -> list[range]:
    """``num_groups`` runs of consecutive layers, as equal as possible (first ones larger)."""
    base, extra = divmod(num_layers, num_groups)
    out, start = [], 0
    for g in range(num_groups):
        length = base + (1 if g < extra else 0)
        out.append(range(start, start + length))
        start += length
    return out


class LoraSpace(SearchSpaceBase):
    """Ranks (per model, group or layer), target projections and alpha/rank."""

    kind: Literal["lora"] = "lora"
    dimension_field: ClassVar[str] = "granularity"
    num_layers: StrictInt = Field(gt=0, le=MAX_LAYERS)
    granularity: Literal["all", "groups", "layer"] = Field(
        "all", description="One rank for all layers, per group of layers, or per layer.")
    num_groups: StrictInt = Field(3, ge=1, le=MAX_LAYERS,
                            description="Groups of consecutive layers (granularity groups).")
    ranks: tuple[SizeChoice, ...] = Field(DEFAULT_RANKS, min_length=1, max_length=MAX_CHOICES,
                                   description="Rank choices; 0 = LoRA absent there.")
    alpha_per_rank: tuple[Annotated[StrictFloat, Field(ge=1e-3, le=1e4)], ...] = Field(
        DEFAULT_ALPHA_PER_RANK, min_length=1,
                                              max_length=MAX_CHOICES,
                                              description="Choices of the scale alpha / r.")
    targets: tuple[LoraTarget, ...] = Field(
        COMMON_TARGETS, min_length=1, max_length=len(LoraTarget),
        description="Projections searched, a flag each (ffn_gate only on gated FFNs).")

    @model_validator(mode="after")
    def _check_choices(self) -> Self:
        check_choices("ranks", self.ranks)
        if not any(self.ranks):
            raise FieldError("ranks", "needs a choice above 0")
        check_choices("alpha_per_rank", self.alpha_per_rank, least=1e-3, most=1e4)
        if len(set(self.targets)) != len(self.targets):
            raise FieldError("targets", f"repeat: {[t.value for t in self.targets]}")
        if self.granularity == "groups" and self.num_groups > self.num_layers:
            raise FieldError("num_groups", f"{self.num_groups} exceeds num_layers "
                             f"{self.num_layers}")
        return self

    @classmethod
    def for_backbone(cls, dims: BackboneDims, **overrides: object) -> LoraSpace:
        """The default LoRA space for a backbone: every projection it has."""
        targets = tuple(LoraTarget) if dims.gated_ffn else COMMON_TARGETS
        return cls.model_validate({"num_layers": dims.num_layers, "targets": targets,
                                   **overrides})

    def backbone_error(self, dims: BackboneDims) -> str | None:
        """A target the backbone lacks (``ffn_gate`` without a gated FFN)."""
        if LoraTarget.FFN_GATE in self.targets and not dims.gated_ffn:
            return (f"targets: ffn_gate: the {dims.model_type} backbone's FFN has no gate "
                    "projection")
        return None

    def rank_parameters(self) -> list[tuple[str, range]]:
        """(parameter name, the layers it sets) at this granularity."""
        if self.granularity == "all":
            return [("rank", range(self.num_layers))]
        if self.granularity == "groups":
            return [(f"rank_group_{g}", layers)
                    for g, layers in enumerate(consecutive_groups(self.num_layers,
                                                                  self.num_groups))]
        return [(f"rank_layer_{i}", range(i, i + 1)) for i in range(self.num_layers)]

    def build_parameters(self) -> list[SearchParameter]:
        """Ranks, then one flag per target, then alpha/rank."""
        ranks = [SearchParameter(name=name, kind=ParameterKind.ORDINAL, values=self.ranks)
                 for name, _ in self.rank_parameters()]
        targets = [SearchParameter(name=target_parameter(t), kind=ParameterKind.BINARY,
                                   values=(0, 1)) for t in self.targets]
        return ranks + targets + [SearchParameter(name="alpha_per_rank",
                                                  kind=ParameterKind.ORDINAL,
                                                  values=self.alpha_per_rank)]

    def rule_error(self, point: Mapping[str, ParamValue]) -> str | None:
        """A target on and a rank above 0."""
        if not any(point[target_parameter(t)] for t in self.targets):
            return (f"{target_parameter(self.targets[0])}: no target is on: at least one "
                    "target_<projection> must be 1")
        if not any(point[name] for name, _ in self.rank_parameters()):
            name = self.rank_parameters()[0][0]
            return f"{name}: every rank is 0: at least one must be above 0"
        return None

    def _layer_ranks(self, point: Mapping[str, ParamValue]) -> list[int]:
        """The rank of each layer at ``point`` (0: absent)."""
        ranks = [0] * self.num_layers
        for name, layers in self.rank_parameters():
            for i in layers:
                ranks[i] = int(point[name])
        return ranks

    def _transferred_ranks(self, point: Mapping[str, ParamValue],
                           source: LoraSpace) -> list[int]:
        """The source's ranks for this space's rank parameters, in their order, before
        they are put on this space's choices (module docstring)."""
        if self.granularity == source.granularity == "groups":
            # Groups are the units: each group keeps its relative place, so equal group
            # counts map group g to group g even where the depths split groups unevenly.
            ranks = [int(point[name]) for name, _ in source.rank_parameters()]
            return [max(ranks[g] for g in sources)
                    for sources in layer_sources(len(ranks), self.num_groups)]
        per_layer = map_layers(source._layer_ranks(point), self.num_layers)
        return [max(per_layer[i] for i in layers) for _, layers in self.rank_parameters()]

    def _transfer(self, point: Mapping[str, ParamValue],
                  source: SearchSpaceBase) -> dict[str, ParamValue] | None:
        """Ranks by relative position (the larger where several meet), targets both
        spaces search, alpha/r and ranks to the nearest choice in log scale (module
        docstring).

        Args:
            point: a valid canonical point of ``source``.
            source: a LoRA space (``transfer_point`` checked the family).

        Returns:
            The point in this space (``transfer_point`` checks it is valid: a target on
            and a rank above 0), or None when a value has no counterpart.
        """
        assert isinstance(source, LoraSpace)  # same kind, so same class
        out: dict[str, ParamValue] = {}
        for (name, _), rank in zip(self.rank_parameters(), self._transferred_ranks(point, source),
                                   strict=True):
            choice = nearest_choice(rank, self.ranks)
            if choice is None:
                return None
            out[name] = choice
        out.update({target_parameter(t): int(t in source.targets
                                             and bool(point[target_parameter(t)]))
                    for t in self.targets})
        alpha = nearest_choice(point["alpha_per_rank"], self.alpha_per_rank)
        if alpha is None:
            return None
        out["alpha_per_rank"] = alpha
        return out

    def _decode(self, point: Mapping[str, ParamValue]) -> PeftConfig:
        ranks = self._layer_ranks(point)
        targets = tuple(t for t in self.targets if point[target_parameter(t)])
        return PeftConfig(num_layers=self.num_layers, lora=(LoraConfig(
            ranks=tuple(ranks), targets=targets,
            alpha_per_rank=float(point["alpha_per_rank"])),))

    def encode(self, config: PeftConfig) -> dict[str, ParamValue]:
        """The point whose ``decode`` is ``config``.

        Raises:
            ConfigError: a method whose descriptor does not list the lora family, LoRA
                modules with different ranks on different targets, ranks that vary inside a
                group, or a rank or scale that is not among the choices.
        """
        if config.num_layers != self.num_layers:
            raise ConfigError(f"num_layers: config has {config.num_layers}, space has "
                              f"{self.num_layers}")
        check_family(config, self.kind)
        modules = [lora for lora in config.lora if any(lora.ranks)]
        if len(modules) != 1:
            raise ConfigError("config is not one LoRA module: the lora space holds exactly that")
        lora = modules[0]
        point: dict[str, ParamValue] = {}
        for name, layers in self.rank_parameters():
            values = {lora.ranks[i] for i in layers}
            if len(values) > 1:
                raise ConfigError(f"{name}: ranks differ inside it ({sorted(values)})")
            point[name] = values.pop()
        if set(lora.targets) - set(self.targets):
            raise ConfigError(f"lora.targets: {sorted(set(lora.targets) - set(self.targets))} "
                              "are not searched by this lora space")
        point.update({target_parameter(t): int(t in lora.targets) for t in self.targets})
        rank = next(r for r in lora.ranks if r)
        point["alpha_per_rank"] = lora.scaling(rank)
        decoded = self.decode(point)
        if decoded != config:
            raise ConfigError("config is not representable in this lora space (dropout, or "
                              "alpha/r differing across layers)")
        return {p.name: point[p.name] for p in self.parameters()}

    def size(self) -> int:
        """(rank combinations with one above 0) x (target sets) x scales."""
        ranks: int = len(self.ranks) ** len(self.rank_parameters())
        if 0 in self.ranks:
            ranks -= 1
        return ranks * ((1 << len(self.targets)) - 1) * len(self.alpha_per_rank)
