import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopeft_service.domain import AutoPeftSpace, BackboneDims, ConfigError, PeftConfig
from autopeft_service.domain.spaces.autopeft import (
    PARALLEL_ADAPTER_SIZE,
    PREFIX_LENGTH,
    SERIAL_ADAPTER_SIZE,
    default_sizes,
    layer_parameter,
)

BERT_BASE = BackboneDims(num_layers=12, hidden_size=768, num_heads=12, ffn_size=3072,
                         total_parameters=109_482_240)
BERT_LARGE = BackboneDims(num_layers=24, hidden_size=1024, num_heads=16, ffn_size=4096,
                          total_parameters=335_141_888)


def test_default_sizes_follow_autopeft() -> None:
    assert default_sizes(768) == (0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768)
    assert default_sizes(384) == (0, 1, 3, 6, 12, 24, 48, 96, 192, 384)


def test_dimensions_are_layers_plus_three() -> None:
    assert AutoPeftSpace.for_backbone(BERT_BASE).dimension == 15
    assert len(AutoPeftSpace.for_backbone(BERT_LARGE).parameters()) == 27


@st.composite
def points(draw: st.DrawFn, space: AutoPeftSpace) -> dict[str, int]:
    return {p.name: draw(st.sampled_from(p.values)) for p in space.parameters()}


SPACE = AutoPeftSpace.for_backbone(BERT_BASE)


@settings(max_examples=200, deadline=None)
@given(points(SPACE))
def test_decode_encode_round_trip(point: dict[str, int]) -> None:
    if not SPACE.is_valid(point):
        with pytest.raises(ConfigError):
            SPACE.decode(point)
        return
    config = SPACE.decode(point)
    assert SPACE.encode(config) == point
    assert PeftConfig.from_json(config.to_json()) == config
    flags = [point[layer_parameter(i)] for i in range(12)]
    if point[SERIAL_ADAPTER_SIZE]:
        assert config.serial_adapters[0].sizes == tuple(point[SERIAL_ADAPTER_SIZE] * f
                                                        for f in flags)
    else:
        assert config.serial_adapters == ()
    if point[PREFIX_LENGTH]:
        assert config.prefix.lengths == tuple(point[PREFIX_LENGTH] * f for f in flags)


def _point(layers: list[int], serial: int = 0, parallel: int = 0, prefix: int = 0) -> dict:
    point = {layer_parameter(i): v for i, v in enumerate(layers)}
    point.update({SERIAL_ADAPTER_SIZE: serial, PARALLEL_ADAPTER_SIZE: parallel,
                  PREFIX_LENGTH: prefix})
    return point


def test_invalid_points_are_rejected_with_reasons() -> None:
    with pytest.raises(ConfigError, match="no layer is on"):
        SPACE.decode(_point([0] * 12, serial=3))
    with pytest.raises(ConfigError, match="no module is on"):
        SPACE.decode(_point([1] * 12))
    with pytest.raises(ConfigError, match="serial_adapter_size: 5 is not one of"):
        SPACE.decode(_point([1] * 12, serial=5))
    with pytest.raises(ConfigError, match="layer_12: unknown parameter"):
        SPACE.decode({**_point([1] * 12, serial=3), "layer_12": 1})
    with pytest.raises(ConfigError, match="layer_3: missing"):
        SPACE.decode({k: v for k, v in _point([1] * 12, serial=3).items() if k != "layer_3"})


def test_encode_rejects_configs_outside_the_space() -> None:
    lora = PeftConfig(num_layers=12, lora={"ranks": [8] * 12})
    with pytest.raises(ConfigError, match="outside the autopeft space"):
        SPACE.encode(lora)
    mixed = PeftConfig(num_layers=12, serial_adapters=[{"sizes": [3] * 6 + [6] * 6}])
    with pytest.raises(ConfigError, match="differs across layers"):
        SPACE.encode(mixed)
    unshared = PeftConfig(num_layers=12, serial_adapters=[{"sizes": [3] * 6 + [0] * 6}],
                          prefix={"lengths": [0] * 6 + [3] * 6})
    with pytest.raises(ConfigError, match="share the same layers"):
        SPACE.encode(unshared)


def test_space_validation() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        AutoPeftSpace(num_layers=2, serial_adapter_sizes=(0, 8, 4), parallel_adapter_sizes=(0,),
                      prefix_lengths=(0,))
    with pytest.raises(ValueError, match="non-zero size"):
        AutoPeftSpace(num_layers=2, serial_adapter_sizes=(0,), parallel_adapter_sizes=(0,),
                      prefix_lengths=(0,))
