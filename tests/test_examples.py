"""Every example file in examples/ is valid."""

from pathlib import Path

import pytest

from autopeft_service.domain import PeftConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*_config.json")), ids=lambda p: p.name)
def test_example_peft_configs_parse(path: Path) -> None:
    config = PeftConfig.from_json(path.read_text())
    layers = 30 if path.name.startswith("smollm2_") else 6  # SmolLM2's, else MiniLM's
    assert config.num_layers == layers and config.has_modules


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("study_*.yaml")), ids=lambda p: p.name)
def test_example_study_specs_parse(path: Path) -> None:
    from autopeft_service.client import load_spec
    from autopeft_service.optimizers.factory import make_optimizer

    spec = load_spec(path)
    assert spec.search_space.num_layers == 6 and spec.budget.total_trials >= 10
    make_optimizer(spec)  # the server accepts its optimiser and settings


def test_there_are_example_study_specs() -> None:
    names = {p.name for p in EXAMPLES.glob("study_*.yaml")}
    assert {"study_rte_minilm.yaml", "study_sst2_minilm.yaml",
            "study_synthetic_minilm.yaml"} <= names
