"""Every example file in examples/ is valid."""

from pathlib import Path

import pytest

from autopeft_service.domain import PeftConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*_config.json")), ids=lambda p: p.name)
def test_example_peft_configs_parse(path: Path) -> None:
    config = PeftConfig.from_json(path.read_text())
    assert config.num_layers == 6 and config.has_modules
