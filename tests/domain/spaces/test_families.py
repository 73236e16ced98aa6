"""Every family honours the contract: decode/encode round trips, exact deployed counts,
invalid points refused naming a parameter, neighbours valid and one step away, size
consistent with enumeration, the papers' well-known configurations are points."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopeft_service.domain.backbone import MINILM_DIMS, BackboneDims
from autopeft_service.domain.baselines import BASELINES
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import (
    LoraConfig,
    LoraTarget,
    ParallelAdapterConfig,
    PeftConfig,
    Position,
    PrefixConfig,
)
from autopeft_service.domain.spaces import (
    FAMILIES,
    DesignSpace,
    LoraSpace,
    SearchSpaceBase,
    UnifiedSpace,
    space_for_backbone,
)
from autopeft_service.domain.spaces.design_space import group_layers
from autopeft_service.domain.spaces.unified import unified_sizes
from tests.domain.spaces.strategies import grid_points, valid_points

BERT_BASE = BackboneDims(num_layers=12, hidden_size=768, num_heads=12, ffn_size=3072,
                         total_parameters=109_482_240)
#: Every family on MiniLM, plus the LoRA space at its other granularities.
SPACES: dict[str, SearchSpaceBase] = {
    **{kind: space_for_backbone(kind, MINILM_DIMS) for kind in FAMILIES},
    "lora-groups": LoraSpace.for_backbone(MINILM_DIMS, granularity="groups", num_groups=4),
    "lora-layer": LoraSpace.for_backbone(MINILM_DIMS, granularity="layer"),
}
PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(SPACES))
def test_random_valid_points_round_trip_and_count_exactly(name: str) -> None:
    space = SPACES[name]

    @PROPERTY
    @given(valid_points(space))
    def check(point: dict[str, Any]) -> None:
        config = space.decode(point)
        assert config.has_modules
        representative = space.encode(config)
        assert space.decode(representative) == config
        if space.injective:
            assert representative == point
        else:  # several designs can be one configuration: encode picks one, stably
            assert space.encode(space.decode(representative)) == representative
        assert PeftConfig.from_json(config.to_json()) == config
        counts = count_parameters(config, MINILM_DIMS)
        # What is stored per task: the prefix MLP folded away, nothing else.
        prefix_mlp = counts.trainable - counts.deployed
        assert prefix_mlp >= 0
        assert (prefix_mlp > 0) == (config.prefix is not None
                                    and config.prefix.reparameterize)

    check()


@pytest.mark.parametrize("name", sorted(SPACES))
def test_invalid_points_are_refused_naming_a_parameter(name: str) -> None:
    space = SPACES[name]
    names = {p.name for p in space.parameters()}

    @PROPERTY
    @given(grid_points(space))
    def check(point: dict[str, Any]) -> None:
        error = space.validity_error(point)
        if error is None:
            space.decode(point)
            return
        with pytest.raises(ConfigError) as raised:
            space.decode(point)
        assert str(raised.value).split(":")[0] in names, str(raised.value)

    check()
    first = space.parameters()[0]
    with pytest.raises(ConfigError, match=f"^{first.name}: missing"):
        space.decode({})
    with pytest.raises(ConfigError, match="^colour: unknown parameter"):
        space.decode({"colour": 1})
    bad = {p.name: p.values[0] for p in space.parameters()} | {first.name: "nope"}
    with pytest.raises(ConfigError, match=f"^{first.name}: 'nope' is not one of"):
        space.decode(bad)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_neighbours_are_valid_distinct_and_one_parameter_away(name: str) -> None:
    space = SPACES[name]

    @settings(max_examples=20, deadline=None,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(valid_points(space))
    def check(point: dict[str, Any]) -> None:
        around = space.neighbours(point)
        assert around
        keys = [tuple(sorted(p.items())) for p in around]
        assert len(set(keys)) == len(keys) and tuple(sorted(point.items())) not in keys
        for other in around:
            assert space.is_valid(other)
            # one parameter moved; the ones it switched off fall back to their first value
            moved = [n for n in point if point[n] != other[n]]
            assert moved
            assert all(n in space.inactive(point) | space.inactive(other)
                       for n in moved[1:]) or len(moved) == 1

    check()


@pytest.mark.parametrize("kind", ["unified", "lora"])
def test_size_equals_the_number_of_valid_points(kind: str) -> None:
    dims = MINILM_DIMS.model_copy(update={"num_layers": 2})
    small = {"unified": UnifiedSpace.for_backbone(dims, attention_sizes=(4, 8),
                                                   ffn_sizes=(16,), scales=(1.0, 4.0)),
             "lora": LoraSpace.for_backbone(dims, granularity="layer", ranks=(0, 4),
                                            alpha_per_rank=(1.0, 2.0))}[kind]
    assert small.size() == sum(1 for _ in small.enumerate_points())


def test_design_space_size_counts_structurally_valid_points() -> None:
    dims = MINILM_DIMS.model_copy(update={"num_layers": 2})
    space = DesignSpace.for_backbone(dims, max_groups=2, budgets=(1.0,))
    assert space.size() == sum(1 for _ in space.enumerate_points())


def test_the_autopeft_family_is_unchanged() -> None:
    space = space_for_backbone("autopeft", BERT_BASE)
    assert space.dimension == 15 and [p.kind.value for p in space.parameters()][-3:] == \
        ["ordinal"] * 3
    assert space.inactive({p.name: p.values[1] for p in space.parameters()}) == set()


# ---------------------------------------------------------------- well-known configurations


def test_mam_adapter_and_scaled_parallel_adapter_are_unified_points() -> None:
    """He et al.: MAM = prefix at attention + scaled parallel adapter at the FFN."""
    layers = BERT_BASE.num_layers
    space = UnifiedSpace.for_backbone(BERT_BASE)
    mam_glue = PeftConfig(  # the GLUE setting: l = 16, r = 16, s = 2
        num_layers=layers, prefix=PrefixConfig(lengths=(16,) * layers),
        parallel_adapters=(ParallelAdapterConfig(sizes=(16,) * layers, position=Position.FFN,
                                                 scale=2.0),))
    point = space.encode(mam_glue)
    assert point["attention_function"] == "prefix" and point["ffn_function"] == "parallel_adapter"
    assert space.decode(point) == mam_glue
    large = BackboneDims(num_layers=12, hidden_size=1024, num_heads=16, ffn_size=4096,
                         total_parameters=406_290_432)
    bart_space = UnifiedSpace.for_backbone(
        large, attention_sizes=tuple(sorted((*unified_sizes(1024), 30))))
    mam_bart = PeftConfig(  # BART-large: l = 30, r = 512, s = 4
        num_layers=12, prefix=PrefixConfig(lengths=(30,) * 12),
        parallel_adapters=(ParallelAdapterConfig(sizes=(512,) * 12, position=Position.FFN,
                                                 scale=4.0),))
    assert bart_space.decode(bart_space.encode(mam_bart)) == mam_bart
    scaled_pa = PeftConfig(num_layers=layers, parallel_adapters=(
        ParallelAdapterConfig(sizes=(64,) * layers, position=Position.FFN, scale=4.0),))
    assert space.encode(scaled_pa)["attention_function"] == "none"
    learned = scaled_pa.model_copy(update={"parallel_adapters": (
        ParallelAdapterConfig(sizes=(64,) * layers, scale=4.0, learned_scale=True),)})
    assert space.encode(learned)["ffn_learned_scale"] == 1
    # LoRA at both positions with their own ranks: two modules, one point.
    both = PeftConfig(num_layers=layers, lora=(
        LoraConfig(ranks=(8,) * layers, targets=(LoraTarget.QUERY, LoraTarget.VALUE),
                   alpha=16.0),
        LoraConfig(ranks=(32,) * layers, targets=(LoraTarget.FFN_IN, LoraTarget.FFN_OUT),
                   alpha=128.0)))
    assert space.decode(space.encode(both)) == both


def test_lora_r8_on_query_value_is_a_point_at_every_granularity() -> None:
    config = BASELINES["lora-r8-qv"].config(BERT_BASE.num_layers)
    for granularity in ("all", "groups", "layer"):
        space = LoraSpace.for_backbone(BERT_BASE, granularity=granularity)
        point = space.encode(config)
        assert space.decode(point) == config
        assert point["target_query"] == point["target_value"] == 1
        assert point["target_key"] == 0 and point["alpha_per_rank"] == 2.0


def test_configs_outside_a_family_are_refused_with_a_reason() -> None:
    lora_space = LoraSpace.for_backbone(BERT_BASE)
    adapter = BASELINES["serial-adapter"].config(12) if "serial-adapter" in BASELINES else \
        PeftConfig(num_layers=12, parallel_adapters=(ParallelAdapterConfig(sizes=(8,) * 12),))
    with pytest.raises(ConfigError, match="lora space"):
        lora_space.encode(adapter)
    mixed = PeftConfig(num_layers=12, lora=(LoraConfig(ranks=(8,) * 6 + (4,) * 6),))
    with pytest.raises(ConfigError, match="rank"):
        lora_space.encode(mixed)
    with pytest.raises(ConfigError, match="BitFit"):
        UnifiedSpace.for_backbone(BERT_BASE).encode(BASELINES["bitfit"].config(12)
                                                    if "bitfit" in BASELINES else
                                                    PeftConfig.from_dict({
                                                        "num_layers": 12,
                                                        "bitfit": {"layers": [True] * 12}}))


def test_the_discovered_design_is_a_point_within_its_budget() -> None:
    """Chen et al.: spindle grouping, uniform allocation, all four groups tuned, a strategy
    mix per group; decoded sizes never exceed the budget at any budget choice."""
    space = DesignSpace.for_backbone(BERT_BASE)
    assert [len(r) for r in group_layers(12, 4, "spindle")] == [2, 4, 4, 2]
    assert [len(r) for r in group_layers(12, 4, "bottleneck")] == [4, 2, 2, 4]
    assert [len(r) for r in group_layers(12, 4, "increasing")] == [1, 2, 4, 5]
    valid = [b for b in space.budgets if space.is_valid(space.discovered_design(b))]
    # Below 0.2 % of BERT-base some layer cannot hold all its strategies (a LoRA rank on
    # query+value costs 4d = 3,072 parameters; three strategies share 9,123 at 0.1 %).
    assert valid == [b for b in space.budgets if b >= 0.2]
    for budget in valid:
        point = space.discovered_design(budget)
        config = space.decode(point)
        assert space.encode(config) == point
        deployed = count_parameters(config, BERT_BASE).deployed
        assert 0 < deployed <= space.budget_parameters(point)
        # The budget is used, less what flooring each size costs (at most one size step per
        # strategy and layer: a LoRA rank is 3,072 parameters here).
        assert deployed > (0.75 if budget < 1 else 0.95) * space.budget_parameters(point)
        strategies = {"serial": bool(config.serial_adapters), "prefix": config.prefix is not None,
                      "lora": bool(config.lora), "bitfit": config.bitfit is not None}
        assert strategies["serial"] and strategies["prefix"] and strategies["lora"]


@given(st.data())
@PROPERTY
def test_design_space_decoded_share_never_exceeds_the_budget(data: st.DataObject) -> None:
    space = SPACES["design_space"]
    point = data.draw(valid_points(space))
    deployed = count_parameters(space.decode(point), MINILM_DIMS).deployed
    assert deployed <= space.budget_parameters(point)


def test_a_too_small_budget_is_invalid_and_says_so() -> None:
    space = DesignSpace.for_backbone(MINILM_DIMS, budgets=(0.0001, 1.0))
    point = space.discovered_design(0.0001)
    assert "budget" in (space.validity_error(point) or "")
