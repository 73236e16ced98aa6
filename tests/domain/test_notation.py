"""docs/notation.md cannot rot: every example it quotes is the description of a configuration
built here (from the baselines, the example files, the search spaces or by hand), and every
method, position and LoRA target the code can write is explained in it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.baselines import BASELINES
from autopeft_service.domain.peft_config import (
    BitFitConfig,
    IA3Config,
    LoraConfig,
    LoraTarget,
    ParallelAdapterConfig,
    PeftConfig,
    Position,
    PrefixConfig,
    SerialAdapterConfig,
)
from autopeft_service.domain.spaces import space_for_backbone

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "notation.md").read_text()
MINILM = BackboneDims(num_layers=6, hidden_size=384, num_heads=12, ffn_size=1536,
                      total_parameters=22_713_216)


def _example(name: str) -> PeftConfig:
    return PeftConfig.from_json((ROOT / "examples" / name).read_text())


def _point(kind: str, layers: list[int], **values: object) -> PeftConfig:
    """The configuration of a point of the family ``kind`` on MiniLM's six layers (each
    parameter not given holds its first value, as the canonical form wants)."""
    space = space_for_backbone(kind, MINILM)
    first = {parameter.name: parameter.values[0] for parameter in space.parameters()}
    flags = {f"layer_{i}": int(i in layers) for i in range(MINILM.num_layers)}
    return space.decode({**first, **flags, **values})


def _serial_sizes() -> PeftConfig:
    return PeftConfig(num_layers=6, serial_adapters=(
        SerialAdapterConfig(sizes=(16, 36, 0, 112, 36, 16)),))


def _design_point() -> PeftConfig:
    return PeftConfig(num_layers=6,
                      serial_adapters=(SerialAdapterConfig(sizes=(11, 29, 0, 0, 0, 0)),),
                      prefix=PrefixConfig(lengths=(0, 0, 12, 29, 0, 0)),
                      bitfit=BitFitConfig(layers=(True, True, True, False, False, False)))


#: Each example of the doc's table and the configuration it describes.
EXAMPLES: dict[str, Callable[[], PeftConfig]] = {
    "serial@ffn[64x6]": lambda: BASELINES["serial-adapter-64"].config(6),
    "lora[8x6:query,value]": lambda: _example("lora_config.json"),
    "lora[8x30:query,value]": lambda: _example("smollm2_lora_config.json"),
    "serial@ffn[24x6] + parallel@ffn[12x6]": lambda: _example("autopeft_config.json"),
    "parallel@ffn[16x6] + prefix[16x6]": lambda: _example("mam_adapter_config.json"),
    "serial@ffn[12x3]": lambda: _point("autopeft", [0, 2, 4], serial_adapter_size=12,
                                       parallel_adapter_size=0, prefix_length=0),
    "parallel@attention[16x3]": lambda: _point(
        "unified", [1, 2, 3], attention_function="parallel_adapter", attention_size=16,
        ffn_function="none"),
    "serial@ffn[16/36/112x5]": _serial_sizes,
    "lora[8x6:query,value] + lora[16x6:ffn_in,ffn_out]": lambda: _point(
        "unified", list(range(6)), attention_function="lora", attention_size=8,
        ffn_function="lora", ffn_size=16),
    "serial@ffn[11/29x2] + prefix[12/29x2] + bitfit[3 layers]": _design_point,
    "ia3[6 layers]": lambda: PeftConfig(num_layers=6, ia3=IA3Config(layers=(True,) * 6)),
    "head only": lambda: BASELINES["head-only"].config(6),
    "full fine-tuning": lambda: BASELINES["full-ft"].config(6),
}


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    assert match, f"docs/notation.md has no section {title!r}"
    return match.group(1)


def test_the_examples_table_is_exactly_the_examples_built_here() -> None:
    quoted = re.findall(r"^\| `([^`]+)` \|", _section("Examples"), re.M)
    assert quoted and sorted(quoted) == sorted(EXAMPLES)


@pytest.mark.parametrize("description", sorted(EXAMPLES))
def test_each_example_is_the_description_of_its_configuration(description: str) -> None:
    assert EXAMPLES[description]().describe() == description


def test_the_family_example_is_an_autopeft_point() -> None:
    described = _point("autopeft", [0, 1, 2, 3], serial_adapter_size=192,
                       parallel_adapter_size=384, prefix_length=192).describe()
    assert described == "serial@ffn[192x4] + parallel@ffn[384x4] + prefix[192x4]"
    assert f"`{described}`" in _section("What each search-space family produces")


def test_every_part_position_and_target_the_code_writes_is_explained() -> None:
    """A configuration with every method at both positions: each part's name (before
    ``@`` or ``[``) is in the forms table, in the order the table gives."""
    everything = PeftConfig(
        num_layers=2,
        serial_adapters=tuple(SerialAdapterConfig(sizes=(4, 4), position=p) for p in Position),
        parallel_adapters=tuple(ParallelAdapterConfig(sizes=(4, 8), position=p)
                                for p in Position),
        prefix=PrefixConfig(lengths=(2, 0)),
        lora=(LoraConfig(ranks=(8, 8), targets=tuple(LoraTarget)),),
        bitfit=BitFitConfig(layers=(True, False)), ia3=IA3Config(layers=(True, True)))
    parts = everything.describe().split(" + ")
    names = [re.match(r"[a-z0-9]+", part).group(0) for part in parts]  # type: ignore[union-attr]
    forms = _section("The forms")
    table = re.findall(r"^\| `([a-z0-9]+)[@\[]", forms, re.M)
    assert list(dict.fromkeys(names)) == table  # every method, in describe's order
    for value in [p.value for p in Position] + [t.value for t in LoraTarget]:
        assert f"`{value}`" in forms, value
    assert "`8/16x4`" in forms and parts[2] == "parallel@attention[4/8x2]"


def test_the_readme_links_the_doc_with_a_checked_example() -> None:
    readme = (ROOT / "README.md").read_text()
    paragraph = next(p for p in readme.split("\n\n") if "docs/notation.md" in p)
    (example,) = re.findall(r"`([^`]*\[[^`]*)`", paragraph)
    assert example in EXAMPLES
