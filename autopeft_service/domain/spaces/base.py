"""The search-space contract every family implements, and what optimisers get from it.

A family is a frozen pydantic model (its fields are what a study gives: number of layers,
size choices, ...) that names discrete parameters and maps points to configurations:

* ``parameters()``: the optimiser's dimensions, each ``binary`` (0/1), ``ordinal`` (an
  ordered choice: sizes, budgets) or ``categorical`` (unordered names: functions, patterns).
* ``validity_error(point)`` / ``is_valid``: the family's rule (e.g. a layer on and a module
  on). A point is valid only in its **canonical form**: a parameter that has no effect at
  that point (the scale of a function that has none, the strategies of a group that is not
  tuned) must hold its first value, so every configuration has exactly one point and no
  optimiser spends a trial on a duplicate. ``canonical(point)`` puts a point in that form.
* ``decode(point) -> PeftConfig``: exactly what the worker trains; ``encode(config)``: the
  inverse, raising ``ConfigError`` when the configuration lies outside the family.
* ``neighbours(point)``: the valid points one step away (flip a flag, move an ordinal one
  step, switch a categorical to any other value), generic over the parameter kinds; local
  search in the optimisers uses it.
* ``size()``: how many valid points there are (a study's budget may not exceed it).
* ``transfer_point(point, source)``: a point of another space of the same family (another
  backbone's depth or width, other choices) as a point of this one, or None when it has
  no counterpart (warm start, issue 32). Layers map by **relative position**
  (``layer_sources``): going deeper, target layer j copies the source layer whose span
  [i / L_s, (i + 1) / L_s) holds j's centre (j + 0.5) / L_t; going shallower, each source
  layer goes to the target layer whose span holds its centre, so several meet in one and
  the family combines them (flags: on if any is on; sizes and ranks: the largest). Going
  deeper and back is exact. Numeric choices map to the nearest choice in log scale
  (``nearest_choice``); each family's hook (``_transfer``) documents its rule.
* ``injective``: whether distinct valid points always decode to distinct configurations.
  Chen et al.'s design space is not (an untuned group beside a tuned one, two groupings
  that give the same layer ranges, a strategy whose size rounds to 0: several designs can
  be one configuration); its ``encode`` returns one representative, and the optimisers
  skip a point whose configuration the study already has (``config_key``).

Pure Python (pydantic only): the server validates and decodes without torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictInt

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.peft_config import PeftConfig

#: A parameter's value: an integer (flags, sizes), a float (budgets, scales) or a name.
ParamValue = int | float | str
#: A point of a space: one value per parameter name.
Point = Mapping[str, ParamValue]

#: Most layers a space may have. Public backbones have at most ~130 (Llama 3.1 405B: 126);
#: beyond this the optimisers' cost grows for nothing (one study with 21,000 layers once
#: stopped every proposal of the server).
MAX_LAYERS = 256
#: Largest module size (bottleneck, rank, prefix length) and hidden size a space may name.
MAX_SIZE = 65_536
#: Most choices one parameter may list.
MAX_CHOICES = 64


#: One size choice (a bottleneck, prefix length or LoRA rank; 0 = off where a family allows
#: it): bounded in the type, so the OpenAPI document states the bound too.
SizeChoice = Annotated[StrictInt, Field(ge=0, le=MAX_SIZE)]


class ParameterKind(StrEnum):
    """How an optimiser should treat a parameter."""

    BINARY = "binary"  # values (0, 1)
    ORDINAL = "ordinal"  # ordered choice among ``values``: neighbours are the adjacent ones
    CATEGORICAL = "categorical"  # unordered choice: every other value is a neighbour


class SearchParameter(BaseModel):
    """One dimension of a search space; ``values[0]`` is its value when it has no effect."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: ParameterKind
    values: tuple[ParamValue, ...]


def layer_parameter(index: int) -> str:
    """Name of the insertion flag of layer ``index``."""
    return f"layer_{index}"


def flag_parameters(num_layers: int) -> list[SearchParameter]:
    """One binary insertion flag per layer, ``layer_0`` first."""
    return [SearchParameter(name=layer_parameter(i), kind=ParameterKind.BINARY, values=(0, 1))
            for i in range(num_layers)]


def check_choices(name: str, values: Sequence[float], least: float = 0,
                  most: float = MAX_SIZE) -> None:
    """Raise a ``FieldError`` naming ``name`` unless ``values`` increase strictly within bounds."""
    from autopeft_service.domain.validation import FieldError

    if any(v < least or v > most for v in values):
        raise FieldError(name, f"values must be between {least} and {most}, got {list(values)}")
    if list(values) != sorted(set(values)):
        raise FieldError(name, f"must be strictly increasing, got {list(values)}")


def _containing(index: int, fine: int, coarse: int) -> int:
    """The layer of a ``coarse``-layer stack whose relative span holds the centre of layer
    ``index`` of a ``fine``-layer stack: floor((index + 0.5) coarse / fine), in integers so
    that a centre on a boundary goes to the later layer (spans are half-open)."""
    return (2 * index + 1) * coarse // (2 * fine)


def layer_sources(source_layers: int, target_layers: int) -> list[tuple[int, ...]]:
    """For each target layer, the source layers it takes its settings from, by relative
    position (module docstring).

    Going deeper (or to the same depth), target layer j takes the one source layer whose
    span [i / L_s, (i + 1) / L_s) holds j's centre (j + 0.5) / L_t: 6 -> 12 layers gives
    (0,), (0,), (1,), (1,), ... Going shallower, the rule is read the other way round,
    source layer i going to the target layer whose span holds i's centre, because target
    centres would skip source layers: 12 -> 6 gives (0, 1), (2, 3), ... Every source layer
    reaches a target layer and every target layer has a source in both directions, and
    going deeper and back gives each source layer exactly itself.

    Args:
        source_layers: L_s, at least 1.
        target_layers: L_t, at least 1.

    Returns:
        ``target_layers`` non-empty tuples of source layer indices, increasing.
    """
    if target_layers >= source_layers:
        return [(_containing(j, target_layers, source_layers),) for j in range(target_layers)]
    out: list[list[int]] = [[] for _ in range(target_layers)]
    for i in range(source_layers):
        out[_containing(i, source_layers, target_layers)].append(i)
    return [tuple(sources) for sources in out]


def map_layers(values: Sequence[int], target_layers: int) -> list[int]:
    """Per-layer values (flags, ranks) of a source stack on a ``target_layers`` stack, by
    relative position (``layer_sources``); layers that meet keep the largest value, so a
    flag is on when any of its source layers is on and a rank is the largest of theirs."""
    return [max(values[i] for i in sources)
            for sources in layer_sources(len(values), target_layers)]


def nearest_choice(value: ParamValue, choices: Sequence[ParamValue]) -> ParamValue | None:
    """The choice that stands for ``value`` in another space's choices.

    An equal choice when there is one; otherwise, for a number, the nearest choice in log
    scale (sizes, ranks, scales and budgets are chosen on doubling grids, so 3 is nearer 4
    than 2), ties to the smaller (cheaper) choice. 0 (a module off) is infinitely far from
    every positive size: it maps to 0 when offered, else to the smallest choice; a positive
    value maps to 0 only when no positive choice exists. A name (a function, a pattern) has
    no nearest: it maps only to itself.

    Args:
        value: a parameter's value in the source space.
        choices: the parameter's values in the target space.

    Returns:
        The target choice, or None when there is none (a name the target lacks).
    """
    exact = _match(value, tuple(choices))
    if exact is not None or isinstance(value, str):
        return exact
    numbers = sorted(c for c in choices if not isinstance(c, str))
    if not numbers:
        return None
    positive = [c for c in numbers if c > 0]
    if value <= 0 or not positive:  # 0 itself was matched above when offered
        return numbers[0]
    return min(positive, key=lambda c: (abs(math.log(c) - math.log(value)), c))


def point_key(point: Point) -> tuple[tuple[str, ParamValue], ...]:
    """A hashable, order-independent key of a point (a configuration of the space)."""
    return tuple(sorted((name, value if isinstance(value, str | float) else int(value))
                        for name, value in point.items()))


def _kind_required(schema: dict[str, Any]) -> None:
    """The documents require ``kind``, so the union's variants are disjoint and a schema-
    driven fuzzer (schemathesis) can build each one. The server itself still reads a
    missing ``kind`` as ``autopeft`` (specs stored before there were families)."""
    if "kind" in schema.get("properties", {}):
        required = schema.setdefault("required", [])
        if "kind" not in required:
            required.insert(0, "kind")


class SearchSpaceBase(BaseModel):
    """A family of PEFT configurations searched by the optimisers (module docstring).

    Subclasses set ``kind`` (a ``Literal``) and implement ``parameters``, ``rule_error``,
    ``_decode``, ``encode`` and ``size``; ``inactive`` when some parameters can lose their
    effect.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False,
                              json_schema_extra=_kind_required)

    kind: str
    #: The field that sets how many parameters the space has (named when a space is too
    #: large for an optimiser).
    dimension_field: ClassVar[str] = "num_layers"
    #: Distinct valid points decode to distinct configurations (module docstring).
    injective: ClassVar[bool] = True
    _parameters: list[SearchParameter] | None = PrivateAttr(None)

    # -- what a family implements

    def build_parameters(self) -> list[SearchParameter]:
        """The family's parameters, in a fixed order (override)."""
        raise NotImplementedError

    def inactive(self, point: Mapping[str, ParamValue]) -> set[str]:
        """Parameters with no effect at this (well-formed) point; they hold their first value
        in the canonical form. Default: none."""
        return set()

    @classmethod
    def for_backbone(cls, dims: BackboneDims, **overrides: object) -> Self:
        """The family's default space for a backbone (override).

        Raises:
            ConfigError: an invalid override.
        """
        raise NotImplementedError

    def backbone_error(self, dims: BackboneDims) -> str | None:
        """Why this space cannot be searched on a backbone (``field: reason``), or None.

        The default accepts every backbone; a family whose choices name parts some
        architectures lack (LoRA's ``ffn_gate``) overrides it.
        """
        return None

    def rule_error(self, point: Mapping[str, ParamValue]) -> str | None:
        """Why a well-formed canonical point is not a valid configuration, or None (override)."""
        return None

    def _transfer(self, point: Mapping[str, ParamValue],
                  source: SearchSpaceBase) -> dict[str, ParamValue] | None:
        """A valid canonical point of ``source`` (same family, other parameters) as a point
        of this space, or None when it has none (override). The result names every
        parameter with a value among its choices; ``transfer_point`` canonicalises it and
        checks the family's rule.

        The default has no mapping, so a family without one transfers only between equal
        spaces rather than guessing.
        """
        return None

    def _decode(self, point: Mapping[str, ParamValue]) -> PeftConfig:
        """The configuration of a valid canonical point (override)."""
        raise NotImplementedError

    def encode(self, config: PeftConfig) -> dict[str, ParamValue]:
        """The point whose ``decode`` is ``config`` (override).

        Raises:
            ConfigError: ``config`` lies outside the family.
        """
        raise NotImplementedError

    def size(self) -> int:
        """Number of valid points (override)."""
        raise NotImplementedError

    # -- generic, from the above

    def parameters(self) -> list[SearchParameter]:
        """The optimiser's parameters (computed once)."""
        if self._parameters is None:
            self._parameters = self.build_parameters()
        return self._parameters

    @property
    def dimension(self) -> int:
        """Number of parameters."""
        return len(self.parameters())

    def validate_point(self, point: Mapping[str, object]) -> dict[str, ParamValue]:
        """Check a point's names and values; return it in parameter order.

        Raises:
            ConfigError: unknown or missing parameter, or a value outside its choices (the
                message starts with the parameter's name).
        """
        params = self.parameters()
        names = {p.name for p in params}
        unknown = sorted(set(point) - names)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown parameter of the {self.kind} space")
        clean: dict[str, ParamValue] = {}
        for p in params:
            if p.name not in point:
                raise ConfigError(f"{p.name}: missing")
            value = point[p.name]
            matched = _match(value, p.values)
            if matched is None:
                raise ConfigError(f"{p.name}: {value!r} is not one of {list(p.values)}")
            clean[p.name] = matched
        return clean

    def canonical(self, point: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
        """The well-formed ``point`` with every inactive parameter at its first value."""
        first = {p.name: p.values[0] for p in self.parameters()}
        out = dict(point)
        for name in self.inactive(out):
            out[name] = first[name]
        return out

    def validity_error(self, point: Mapping[str, object]) -> str | None:
        """Why ``point`` is not a valid point of the space (names the parameter), or None."""
        try:
            clean = self.validate_point(point)
        except ConfigError as error:
            return str(error)
        canonical = self.canonical(clean)
        if canonical != clean:
            name = next(n for n in clean if canonical[n] != clean[n])
            return (f"{name}: has no effect at this point and must hold its first value "
                    f"{canonical[name]!r}, got {clean[name]!r}")
        return self.rule_error(clean)

    def is_valid(self, point: Mapping[str, object]) -> bool:
        """True when ``point`` is a valid canonical point."""
        return self.validity_error(point) is None

    def decode(self, point: Mapping[str, object]) -> PeftConfig:
        """The PeftConfig a point stands for: exactly what the worker trains.

        Raises:
            ConfigError: the point is malformed, not canonical or breaks the family's rule.
        """
        error = self.validity_error(point)
        if error is not None:
            raise ConfigError(error)
        return self._decode(self.validate_point(point))

    def config_key(self, point: Mapping[str, object]) -> str:
        """The decoded configuration as canonical JSON: equal for points that train the same
        thing (the points themselves differ only in a non-injective family).

        Raises:
            ConfigError: the point is not valid.
        """
        return self.decode(point).model_dump_json()

    def neighbours(self, point: Mapping[str, ParamValue]) -> list[dict[str, ParamValue]]:
        """Valid points one step from ``point`` (canonicalised, distinct, ``point`` excluded).

        A step flips a binary, moves an ordinal to an adjacent value or switches a
        categorical to any other value.
        """
        clean = self.validate_point(point)
        origin = point_key(self.canonical(clean))
        seen = {origin}
        out: list[dict[str, ParamValue]] = []
        for p in self.parameters():
            position = p.values.index(clean[p.name])
            if p.kind is ParameterKind.CATEGORICAL:
                steps = [i for i in range(len(p.values)) if i != position]
            else:
                steps = [i for i in (position - 1, position + 1) if 0 <= i < len(p.values)]
            for i in steps:
                moved = self.canonical({**clean, p.name: p.values[i]})
                key = point_key(moved)
                if key not in seen and self.rule_error(moved) is None:
                    seen.add(key)
                    out.append(moved)
        return out

    def transfer_point(self, point: Mapping[str, ParamValue],
                       source: SearchSpaceBase) -> dict[str, ParamValue] | None:
        """The point of ``source`` (another space of the same family, possibly for a
        backbone of another depth or width) as a point of this space, or None when it has
        no counterpart.

        Equal parameters (same names and choices) keep the point as it is; otherwise the
        family's ``_transfer`` maps it (by relative layer position, nearest choices: module
        docstring and each family's hook). What it gives is returned only when it is a
        valid point of this space (a design whose budget is too small on this backbone, a
        projection this space does not search: None), in canonical form and parameter order.

        Args:
            point: a point of ``source``; it must break no rule of ``source`` (canonical
                form is not required: it is put in it first).
            source: the space ``point`` belongs to.

        Returns:
            The corresponding valid point of this space, or None.

        Raises:
            ConfigError: ``source`` is of another family (both kinds named), or ``point``
                is not a valid point of ``source``.
        """
        if source.kind != self.kind:
            raise ConfigError(f"kind: a point of the {source.kind} space has no counterpart "
                              f"in the {self.kind} space: transfer needs the same family")
        clean = source.canonical(source.validate_point(point))
        error = source.rule_error(clean)
        if error is not None:
            raise ConfigError(f"not a valid point of the source space: {error}")
        if self.parameters() == source.parameters():
            mapped: dict[str, ParamValue] | None = clean
        else:
            mapped = self._transfer(clean, source)
        if mapped is None:
            return None
        # The hook picks every value among this space's choices: a ConfigError here is a
        # bug in the hook, and is left loud rather than read as "no counterpart".
        mapped = self.canonical(self.validate_point(mapped))
        return mapped if self.rule_error(mapped) is None else None

    def enumerate_points(self, limit: int = 1_000_000) -> Iterator[dict[str, ParamValue]]:
        """Every valid point (for tests and tiny spaces).

        Raises:
            ConfigError: the full grid has more than ``limit`` points.
        """
        params = self.parameters()
        grid = 1
        for p in params:
            grid *= len(p.values)
        if grid > limit:
            raise ConfigError(f"search_space: {grid} grid points exceed {limit}")
        for values in itertools.product(*[p.values for p in params]):
            point = dict(zip([p.name for p in params], values, strict=True))
            if self.is_valid(point):
                yield point


def _match(value: object, choices: tuple[ParamValue, ...]) -> ParamValue | None:
    """The choice equal to ``value`` (numbers compare by value, never a bool), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value if value in choices else None
    if isinstance(value, int | float):
        for choice in choices:
            if not isinstance(choice, str) and choice == value:
                return choice
    return None
