"""The search-space families on decoder backbones (SmolLM2's dimensions)."""

from __future__ import annotations

import random

import pytest

from autopeft_service.domain import count_parameters
from autopeft_service.domain.backbone import SMOLLM2_DIMS
from autopeft_service.domain.peft_config import LoraTarget
from autopeft_service.domain.spaces import space_for_backbone
from autopeft_service.domain.spaces.design_space import group_parameter


@pytest.mark.parametrize("kind", ["lora", "unified", "autopeft", "design_space"])
def test_every_family_decodes_counted_configurations_on_smollm2(kind: str) -> None:
    space = space_for_backbone(kind, SMOLLM2_DIMS)
    rng = random.Random(0)
    points: list[dict[str, object]] = []
    while len(points) < 16:
        point = {p.name: rng.choice(p.values) for p in space.parameters()}
        if space.validity_error(point) is None:
            points.append(point)
    for point in points:
        config = space.decode(point)
        counts = count_parameters(config, SMOLLM2_DIMS)
        assert 0 < counts.deployed <= counts.trainable
        assert config.bitfit is None  # SmolLM2's layers have no bias


def test_the_lora_space_searches_the_gate_only_where_the_ffn_has_one() -> None:
    from autopeft_service.domain.backbone import MINILM_DIMS

    llama = space_for_backbone("lora", SMOLLM2_DIMS)
    bert = space_for_backbone("lora", MINILM_DIMS)
    assert set(llama.targets) == set(LoraTarget) and LoraTarget.FFN_GATE not in bert.targets
    assert llama.size() == 7 * (2 ** 7 - 1) * 4  # ranks with one above 0 x target sets x scales
    assert llama.backbone_error(SMOLLM2_DIMS) is None
    assert "no gate projection" in str(
        space_for_backbone("lora", MINILM_DIMS, targets=["ffn_gate"]).backbone_error(MINILM_DIMS))


def test_the_design_space_refuses_bitfit_on_a_backbone_without_biases() -> None:
    space = space_for_backbone("design_space", SMOLLM2_DIMS)
    point = {p.name: p.values[0] for p in space.parameters()}
    point.update({"groups": 1, group_parameter(0, "tuned"): 1, "budget": max(space.budgets)})
    for strategy in ("adapter", "prefix", "bitfit", "lora"):
        point[group_parameter(0, strategy)] = int(strategy == "bitfit")
    assert "no bias terms" in str(space.validity_error(point))
    point[group_parameter(0, "bitfit")], point[group_parameter(0, "lora")] = 0, 1
    assert space.validity_error(point) is None
    lora = space.decode(point).lora[0]
    # the budget prices LoRA on q (576 -> 576) and v (576 -> 192): 1,920 per rank and layer
    budget = int(max(space.budgets) * SMOLLM2_DIMS.total_parameters / 100)
    assert lora.ranks[0] == budget // 30 // 1920
