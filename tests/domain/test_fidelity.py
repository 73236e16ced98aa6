"""The fidelity section of a study spec."""

from __future__ import annotations

import pytest

from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.fidelity import Fidelity
from autopeft_service.domain.validation import parse_model


def test_levels_and_their_successors() -> None:
    fidelity = Fidelity(levels=(1 / 9, 1 / 3, 1.0))
    assert fidelity.next_level(1 / 9) == pytest.approx(1 / 3)
    assert fidelity.next_level(1 / 3) == 1.0 and fidelity.next_level(1.0) is None
    assert fidelity.level_index(1 / 3) == 1
    with pytest.raises(ValueError, match="not a fidelity level"):
        fidelity.level_index(0.5)


@pytest.mark.parametrize(("data", "field"), [
    ({"levels": [0.5, 0.4, 1.0]}, "fidelity.levels.1"),
    ({"levels": [0.5, 0.9]}, "fidelity.levels.1"),
    ({"levels": [1.0]}, "levels"),
    ({"levels": [-0.1, 1.0]}, "levels.0"),
    ({"rule": "lucky"}, "rule"),
    ({"eta": 1.2}, "eta"),
    ({"levels": [0.5, 1.0], "extra": 1}, "extra"),
])
def test_bad_sections_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_model(Fidelity, data)
