"""Transfer of points between spaces of one family on backbones of other depths (issue 32):
``SearchSpaceBase.transfer_point`` maps layers by relative position, per family.

Per family (AutoPEFT, unified, design space, LoRA at each granularity): the same space
keeps every point; 6 -> 12 -> 6 layers gives every point back; a hand-worked example each
way; every transferred point is valid in the target or None (6 <-> 24); another family is
refused naming both kinds.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.peft_config import LoraTarget
from autopeft_service.domain.spaces import (
    AutoPeftSpace,
    DesignSpace,
    LoraSpace,
    ParamValue,
    SearchSpaceBase,
    UnifiedSpace,
)
from autopeft_service.domain.spaces.base import layer_sources, map_layers, nearest_choice


def _dims(num_layers: int, hidden: int = 384, gated: bool = False) -> BackboneDims:
    """A backbone whose parameters grow with its depth, so that a design's budget in
    percent gives each layer the same allotment at every depth (the round trip then never
    loses a design to a budget that became too small)."""
    return BackboneDims(num_layers=num_layers, hidden_size=hidden, num_heads=hidden // 64 or 1,
                        ffn_size=4 * hidden, total_parameters=num_layers * 13 * hidden * hidden,
                        model_type="llama" if gated else "bert", gated_ffn=gated,
                        layer_bias_parameters=0 if gated else -1)


#: Family (and LoRA granularity) -> the space on a backbone.
FAMILIES: dict[str, Callable[[BackboneDims], SearchSpaceBase]] = {
    "autopeft": AutoPeftSpace.for_backbone,
    "unified": UnifiedSpace.for_backbone,
    "design_space": DesignSpace.for_backbone,
    "lora-all": lambda dims: LoraSpace.for_backbone(dims, granularity="all"),
    "lora-groups": lambda dims: LoraSpace.for_backbone(dims, granularity="groups"),
    # 4 groups of 6 layers are uneven (2, 2, 1, 1): groups still map group to group.
    "lora-groups-4": lambda dims: LoraSpace.for_backbone(dims, granularity="groups",
                                                         num_groups=4),
    "lora-layer": lambda dims: LoraSpace.for_backbone(dims, granularity="layer"),
}
POINTS = 150


def _random_points(space: SearchSpaceBase, count: int = POINTS,
                   seed: int = 0) -> list[dict[str, ParamValue]]:
    """``count`` valid canonical points: grid draws put in canonical form, kept when valid."""
    rng = random.Random(seed)
    out: list[dict[str, ParamValue]] = []
    while len(out) < count:
        point = space.canonical({p.name: rng.choice(p.values) for p in space.parameters()})
        if space.rule_error(point) is None:
            out.append(point)
    return out


def _flags(values: list[int]) -> dict[str, ParamValue]:
    return {f"layer_{i}": v for i, v in enumerate(values)}


def _flag_values(point: dict[str, ParamValue] | None, num_layers: int) -> list[ParamValue]:
    assert point is not None
    return [point[f"layer_{i}"] for i in range(num_layers)]


# -- the shared rules


def test_layer_sources_by_relative_position() -> None:
    assert layer_sources(6, 12) == [(i // 2,) for i in range(12)]
    assert layer_sources(12, 6) == [(2 * j, 2 * j + 1) for j in range(6)]
    assert layer_sources(6, 24) == [(i // 4,) for i in range(24)]
    assert layer_sources(6, 6) == [(i,) for i in range(6)]
    # Uneven ratios: centres decide; every layer on either side is used.
    assert layer_sources(6, 4) == [(0,), (1, 2), (3,), (4, 5)]
    assert layer_sources(4, 6) == [(0,), (1,), (1,), (2,), (3,), (3,)]
    assert layer_sources(5, 1) == [(0, 1, 2, 3, 4)]
    for source in range(1, 30):
        for target in range(1, 30):
            sources = layer_sources(source, target)
            assert len(sources) == target and all(sources)
            assert sorted({i for s in sources for i in s}) == list(range(source))


def test_map_layers_keeps_the_larger_and_deeper_and_back_is_exact() -> None:
    assert map_layers([1, 0, 0, 0, 0, 1], 12) == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert map_layers([8, 0, 4, 16, 0, 0], 3) == [8, 16, 0]
    rng = random.Random(1)
    for source in range(1, 13):
        for target in range(source, 40):
            values = [rng.choice((0, 1, 4, 8)) for _ in range(source)]
            assert map_layers(map_layers(values, target), source) == values


def test_nearest_choice_in_log_scale() -> None:
    sizes = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    assert nearest_choice(48, (0, 1, 3, 6, 12, 24, 48)) == 48  # offered: kept
    assert nearest_choice(3, sizes) == 4  # log: 3/2 = 1.5 > 4/3
    assert nearest_choice(384, sizes) == 512  # not 256, the nearer one in absolute terms
    assert nearest_choice(8, (0, 4, 16)) == 4  # a tie in log scale: the smaller
    assert nearest_choice(0, sizes) == 0  # off stays off
    assert nearest_choice(0, (4, 8)) == 4  # no off choice: the smallest
    assert nearest_choice(16, (0,)) == 0  # no positive choice
    assert nearest_choice(2.0, (1.0, 4.0)) == 1.0
    assert nearest_choice(0.3, (0.05, 0.1, 0.2, 0.5, 1.0)) == 0.2
    assert nearest_choice("spindle", ("uniform", "spindle")) == "spindle"
    assert nearest_choice("spindle", ("uniform",)) is None


# -- every family


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_same_space_keeps_every_point(family: str) -> None:
    space = FAMILIES[family](_dims(6))
    twin = FAMILIES[family](_dims(6))  # an equal space built again
    for point in _random_points(space):
        assert space.transfer_point(point, space) == point
        assert space.transfer_point(point, twin) == point


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("deeper", [12, 24])
def test_deeper_and_back_gives_every_point_back(family: str, deeper: int) -> None:
    shallow, deep = FAMILIES[family](_dims(6)), FAMILIES[family](_dims(deeper))
    if family in ("autopeft", "unified", "lora-layer"):  # per-layer parameters: the hook
        assert shallow.parameters() != deep.parameters()
    lost = 0
    for point in _random_points(shallow, seed=deeper):
        there = deep.transfer_point(point, shallow)
        if there is None:
            # Only a design can be lost, and only to its budget: with more tuned layers an
            # increasing or decreasing allocation leaves the lightest layer less.
            assert family == "design_space", point
            assert (deep.validity_error(point) or "").startswith("budget: "), point
            lost += 1
            continue
        assert deep.is_valid(there)
        assert shallow.transfer_point(there, deep) == point
    assert lost < POINTS // 3  # about 1 in 7 at 12 layers, 1 in 4 at 24


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(("source_layers", "target_layers"), [(6, 24), (24, 6), (12, 6),
                                                              (6, 4), (4, 6)])
def test_every_transferred_point_is_valid_or_none(family: str, source_layers: int,
                                                  target_layers: int) -> None:
    source = FAMILIES[family](_dims(source_layers))
    target = FAMILIES[family](_dims(target_layers, hidden=768))  # another width too
    mapped = [target.transfer_point(point, source) for point in _random_points(source)]
    for point in mapped:
        assert point is None or target.is_valid(point), point
    # Most points have a counterpart; a design loses one to a pattern or group count the
    # target depth does not offer, or to a budget too small there (6 -> 4: about half).
    least = POINTS // 4 if family == "design_space" else POINTS
    assert sum(point is not None for point in mapped) >= least


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_another_family_is_refused_naming_both(family: str) -> None:
    space = FAMILIES[family](_dims(6))
    other = AutoPeftSpace.for_backbone(_dims(6)) if space.kind != "autopeft" else \
        LoraSpace.for_backbone(_dims(6))
    point = _random_points(other, count=1)[0]
    with pytest.raises(ConfigError, match=f"{other.kind} space .* {space.kind} space"):
        space.transfer_point(point, other)


def test_a_point_that_is_not_of_the_source_is_refused() -> None:
    six, twelve = AutoPeftSpace.for_backbone(_dims(6)), AutoPeftSpace.for_backbone(_dims(12))
    point = {**_flags([0] * 6), "serial_adapter_size": 48, "parallel_adapter_size": 0,
             "prefix_length": 0}
    with pytest.raises(ConfigError, match="no layer is on"):
        twelve.transfer_point(point, six)
    with pytest.raises(ConfigError, match="layer_6: unknown parameter"):
        six.transfer_point({**point, "layer_6": 1}, six)


# -- hand-worked examples


def test_autopeft_example() -> None:
    six, twelve = AutoPeftSpace.for_backbone(_dims(6)), AutoPeftSpace.for_backbone(_dims(12))
    sizes = {"serial_adapter_size": 48, "parallel_adapter_size": 0, "prefix_length": 3}
    point = {**_flags([1, 0, 0, 0, 0, 1]), **sizes}
    mapped = twelve.transfer_point(point, six)
    assert mapped == {**_flags([1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]), **sizes}
    # 12 -> 6: pairs of layers meet, on when either is on.
    merged = six.transfer_point({**_flags([1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]), **sizes},
                                twelve)
    assert _flag_values(merged, 6) == [1, 0, 1, 1, 0, 0]
    # Another width: 1024's grid (0, 1, 2, 4, ...) takes the nearest size in log scale.
    large = AutoPeftSpace.for_backbone(_dims(24, hidden=1024))
    wide = large.transfer_point({**point, "parallel_adapter_size": 384}, six)
    assert wide is not None
    assert _flag_values(wide, 24) == [1] * 4 + [0] * 16 + [1] * 4
    assert (wide["serial_adapter_size"], wide["parallel_adapter_size"],
            wide["prefix_length"]) == (64, 512, 4)


def test_unified_example() -> None:
    six, twelve = UnifiedSpace.for_backbone(_dims(6)), UnifiedSpace.for_backbone(_dims(12))
    mam: dict[str, ParamValue] = {"attention_function": "prefix", "attention_size": 16, "attention_scale": 1.0,
           "attention_learned_scale": 0, "ffn_function": "parallel_adapter", "ffn_size": 256,
           "ffn_scale": 4.0, "ffn_learned_scale": 1}
    point = {**_flags([0, 1, 1, 0, 0, 0]), **mam}
    assert twelve.transfer_point(point, six) == {
        **_flags([0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]), **mam}
    merged = six.transfer_point({**_flags([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0]), **mam},
                                twelve)
    assert _flag_values(merged, 6) == [0, 1, 0, 0, 0, 1]
    # A narrow target: sizes to its nearest choice, scales to the nearest of its own.
    narrow = UnifiedSpace.for_backbone(_dims(12, hidden=48), scales=(1.0, 8.0))
    small = narrow.transfer_point(point, six)
    assert small is not None
    assert (small["attention_size"], small["ffn_size"], small["ffn_scale"]) == (16, 32, 8.0)
    # A non-canonical source point (a scale on a prefix) is put in canonical form first.
    assert twelve.transfer_point({**point, "attention_scale": 4.0}, six) == \
        twelve.transfer_point(point, six)


def test_design_space_example() -> None:
    six = DesignSpace.for_backbone(_dims(6), budgets=(1.0, 10.0))
    twelve = DesignSpace.for_backbone(_dims(12), budgets=(0.5, 2.0, 10.0))
    design = six.discovered_design(1.0)  # 4 groups, spindle: 1, 2, 2, 1 layers of 6
    mapped = twelve.transfer_point(design, six)
    assert mapped == {**design, "budget": 0.5}  # 1 % -> 0.5 %: a tie in log scale, smaller
    # The same design on 12 layers: spindle groups of 2, 4, 4, 2.
    assert mapped is not None and twelve.decode(mapped).lora[0].ranks[:3] != (0, 0, 0)
    # Uniform 4 groups of 12 layers: 4 does not divide 6, so no counterpart on 6 layers.
    uniform = {**twelve.discovered_design(10.0), "pattern": "uniform"}
    assert twelve.is_valid(uniform)
    assert six.transfer_point(uniform, twelve) is None
    # Uniform 3 groups is offered on both depths; group 3's flags are inactive (canonical).
    three = twelve.canonical({**uniform, "groups": 3})
    assert six.transfer_point(three, twelve) == {**three, "budget": 10.0}
    # More groups than the target searches, or a pattern it leaves out: no counterpart.
    two = DesignSpace.for_backbone(_dims(12), max_groups=2, budgets=(10.0,))
    assert two.transfer_point(three, twelve) is None
    spindles = DesignSpace.for_backbone(_dims(6), budgets=(10.0,), patterns=["spindle"])
    assert spindles.transfer_point(three, twelve) is None
    # One group: the pattern is inactive and any target pattern set holds it.
    one = twelve.canonical({**uniform, "groups": 1})
    assert spindles.transfer_point(one, twelve) == {**spindles.canonical(one), "pattern":
                                                    "spindle"}


def test_design_space_budget_or_bitfit_the_target_refuses() -> None:
    six = DesignSpace.for_backbone(_dims(6), budgets=(10.0,))
    bitfit = {**six.discovered_design(10.0)}
    llama = DesignSpace.for_backbone(_dims(12, gated=True), budgets=(10.0,))
    assert not llama.is_valid(bitfit)  # group 4 holds BitFit, which a Llama has not
    assert llama.transfer_point(bitfit, six) is None
    tiny = DesignSpace.for_backbone(_dims(12), budgets=(0.0001,))
    assert tiny.transfer_point(bitfit, six) is None  # every size would round to 0


def test_lora_examples() -> None:
    layer6 = LoraSpace.for_backbone(_dims(6), granularity="layer")
    layer12 = LoraSpace.for_backbone(_dims(12), granularity="layer")
    targets = {f"target_{t.value}": int(t in (LoraTarget.QUERY, LoraTarget.VALUE))
               for t in layer6.targets}
    ranks6 = [8, 0, 0, 0, 0, 16]
    point = {**{f"rank_layer_{i}": r for i, r in enumerate(ranks6)}, **targets,
             "alpha_per_rank": 2.0}
    assert layer12.transfer_point(point, layer6) == {
        **{f"rank_layer_{i}": ranks6[i // 2] for i in range(12)}, **targets,
        "alpha_per_rank": 2.0}
    ranks12 = [8, 0, 0, 4, 0, 0, 2, 64, 0, 0, 0, 1]
    merged = layer6.transfer_point({**{f"rank_layer_{i}": r for i, r in enumerate(ranks12)},
                                    **targets, "alpha_per_rank": 2.0}, layer12)
    assert merged is not None
    assert [merged[f"rank_layer_{i}"] for i in range(6)] == [8, 4, 0, 64, 0, 1]
    # Groups map group to group, even where 6 layers split unevenly (2, 2, 1, 1).
    groups6 = LoraSpace.for_backbone(_dims(6), granularity="groups", num_groups=4)
    groups12 = LoraSpace.for_backbone(_dims(12), granularity="groups", num_groups=4)
    grouped = {"rank_group_0": 8, "rank_group_1": 0, "rank_group_2": 4, "rank_group_3": 16,
               **targets, "alpha_per_rank": 2.0}
    assert groups12.transfer_point(grouped, groups6) == grouped
    # 4 groups -> 2: neighbouring groups meet, the larger rank wins.
    pairs = LoraSpace.for_backbone(_dims(12), granularity="groups", num_groups=2)
    halved = pairs.transfer_point(grouped, groups6)
    assert halved is not None and (halved["rank_group_0"], halved["rank_group_1"]) == (8, 16)
    # Another granularity: a rank parameter takes the largest of its layers.
    everywhere = LoraSpace.for_backbone(_dims(12), granularity="all", ranks=(0, 4, 16),
                                        alpha_per_rank=(1.0, 4.0))
    single = everywhere.transfer_point(point, layer6)
    assert single is not None
    assert (single["rank"], single["alpha_per_rank"]) == (16, 1.0)  # 2.0: a tie, smaller
    all6 = LoraSpace.for_backbone(_dims(6), granularity="all")
    assert everywhere.transfer_point({"rank": 8, **targets, "alpha_per_rank": 2.0},
                                     all6) == {"rank": 4, **targets, "alpha_per_rank": 1.0}


def test_lora_targets_the_target_space_lacks() -> None:
    decoder = LoraSpace.for_backbone(_dims(6, gated=True))
    encoder = LoraSpace.for_backbone(_dims(12))
    assert LoraTarget.FFN_GATE in decoder.targets and LoraTarget.FFN_GATE not in encoder.targets
    off = {f"target_{t.value}": 0 for t in decoder.targets}
    gate_and_query = {"rank": 8, **off, "target_ffn_gate": 1, "target_query": 1,
                      "alpha_per_rank": 2.0}
    assert encoder.transfer_point(gate_and_query, decoder) == {
        "rank": 8, **{f"target_{t.value}": int(t is LoraTarget.QUERY)
                      for t in encoder.targets}, "alpha_per_rank": 2.0}
    # Only the gate was on: nothing the encoder searches stays on, no counterpart.
    assert encoder.transfer_point({**gate_and_query, "target_query": 0}, decoder) is None
    # The other way, the decoder's gate flag is off.
    back = decoder.transfer_point({"rank": 8, **{f"target_{t.value}": 1
                                                 for t in encoder.targets},
                                   "alpha_per_rank": 2.0}, encoder)
    assert back is not None and back["target_ffn_gate"] == 0
