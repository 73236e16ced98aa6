"""Chen et al.'s five grouping patterns never alias (issue 30): every pattern the design
space offers at a depth and group count has its own shape and its own grouping, and a
pattern it cannot shape there is refused, naming ``pattern`` (a point) or ``patterns`` (a
space), rather than standing in for another."""

from __future__ import annotations

import itertools

import pytest

from autopeft_service.domain.backbone import MINILM_DIMS, BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.spaces import DesignSpace
from autopeft_service.domain.spaces.design_space import (
    PATTERNS,
    group_layers,
    has_shape,
    offered_patterns,
    pattern_error,
)
from autopeft_service.domain.validation import parse_model


def _sizes(num_layers: int, groups: int, pattern: str) -> tuple[int, ...]:
    return tuple(len(r) for r in group_layers(num_layers, groups, pattern))


def _dims(num_layers: int) -> BackboneDims:
    return BackboneDims(num_layers=num_layers, hidden_size=64, num_heads=4, ffn_size=256,
                        total_parameters=num_layers * 50_000)


@pytest.mark.parametrize("num_layers", range(1, 49))
def test_every_offered_pattern_is_distinct_at_every_depth_and_group_count(
        num_layers: int) -> None:
    space = DesignSpace.for_backbone(_dims(num_layers), max_groups=min(8, num_layers),
                                     budgets=(100.0,))
    for groups in range(2, space.max_groups + 1):  # every G the space accepts a pattern at
        offered = offered_patterns(num_layers, groups)
        assert offered, (num_layers, groups)  # some pattern always shapes G <= L groups
        groupings = {p: _sizes(num_layers, groups, p) for p in offered}
        assert len(set(groupings.values())) == len(offered), (num_layers, groups, groupings)
        for pattern, sizes in groupings.items():
            assert sum(sizes) == num_layers and min(sizes) >= 1
            assert [p for p in PATTERNS if has_shape(p, list(sizes))] == [pattern]
        # The space offers exactly these at G: the others are invalid points naming pattern.
        for pattern in space.pattern_choices:
            point = _point(space, groups, pattern)
            error = space.validity_error(point)
            if pattern in offered:
                assert error is None or not error.startswith("pattern"), error
            else:
                assert error is not None and error.startswith("pattern: "), (pattern, error)
                with pytest.raises(ValueError, match=pattern):
                    group_layers(num_layers, groups, pattern)


def _point(space: DesignSpace, groups: int, pattern: str) -> dict[str, object]:
    point: dict[str, object] = {"groups": groups, "pattern": pattern, "budget": 100.0,
                                "allocation": "uniform"}
    for g in range(space.max_groups):
        point[f"group_{g}_tuned"] = int(g < groups)
        for strategy in ("adapter", "prefix", "bitfit", "lora"):
            point[f"group_{g}_{strategy}"] = int(g < groups and strategy == "adapter")
    return space.canonical(point)  # type: ignore[arg-type]


def test_the_shapes_exclude_one_another() -> None:
    for groups in range(1, 7):
        for sizes in itertools.product(range(1, 5), repeat=groups):
            assert sum(has_shape(p, list(sizes)) for p in PATTERNS) <= 1, sizes


def test_six_layers_the_issue_30_collision_is_gone() -> None:
    """Before: uniform = decreasing = [2, 2, 1, 1] at 4 groups of MiniLM's 6 layers."""
    assert offered_patterns(6, 4) == ("increasing", "decreasing", "spindle", "bottleneck")
    assert [_sizes(6, 4, p) for p in offered_patterns(6, 4)] == [
        (1, 1, 2, 2), (2, 2, 1, 1), (1, 2, 2, 1), (2, 1, 1, 2)]
    assert "4 does not divide 6" in (pattern_error(6, 4, "uniform") or "")
    assert offered_patterns(6, 3) == PATTERNS
    assert offered_patterns(6, 2) == ("uniform", "increasing", "decreasing")
    assert "at least 3 groups" in (pattern_error(6, 2, "spindle") or "")
    assert _sizes(12, 4, "spindle") == (2, 4, 4, 2)  # Chen et al.'s 12-layer spindle
    space = DesignSpace.for_backbone(MINILM_DIMS, budgets=(1.0, 100.0))
    assert space.max_groups == 4 and space.pattern_choices == PATTERNS
    assert space.validity_error(_point(space, 4, "uniform")) == (
        "pattern: uniform needs 4 equal groups, and 4 does not divide 6 layers")
    assert space.is_valid(space.discovered_design(1.0))


def test_the_space_counts_and_offers_only_the_patterns_that_shape() -> None:
    two = DesignSpace.for_backbone(MINILM_DIMS, max_groups=2)
    assert two.pattern_choices == ("uniform", "increasing", "decreasing")
    assert next(p for p in two.parameters() if p.name == "pattern").values == \
        two.pattern_choices
    small = DesignSpace.for_backbone(MINILM_DIMS, max_groups=2, budgets=(100.0,))
    assert small.size() == sum(1 for _ in small.enumerate_points())


@pytest.mark.parametrize(("overrides", "message"), [
    ({"max_groups": 2, "patterns": ["spindle"]}, "spindle is offered at no group count"),
    ({"max_groups": 1, "patterns": ["uniform"]}, "uniform is offered at no group count"),
    ({"max_groups": 4, "patterns": ["uniform", "uniform"]}, "each pattern once"),
])
def test_a_space_naming_a_pattern_it_cannot_shape_is_refused(
        overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^patterns: {message}"):
        parse_model(DesignSpace, {"backbone": MINILM_DIMS, **overrides})


def test_a_space_searching_some_patterns_and_the_discovered_design() -> None:
    space = DesignSpace.for_backbone(MINILM_DIMS, patterns=["spindle", "uniform"])
    assert space.pattern_choices == ("spindle", "uniform")
    assert space.is_valid(space.discovered_design(1.0))
    without = DesignSpace.for_backbone(MINILM_DIMS, patterns=["uniform", "increasing"])
    with pytest.raises(ConfigError, match="pattern: the discovered design is a spindle"):
        without.discovered_design(1.0)
