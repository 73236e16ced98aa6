"""One method registry (``domain.methods``): a method registered once, with its abilities,
is validated, counted and described by ``PeftConfig``, accepted or refused by every search
space as its descriptor's ``families`` says, and exported or refused by name as its
``export`` says, with no other file naming it. A dummy method stands for a new one: its
config class is a ``PeftConfig`` subclass with one more field, its descriptor is
registered by a fixture and removed afterwards."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.methods import (
    METHODS,
    NO_PEFT_FORM,
    MethodDescriptor,
    PeftForm,
    export_refusal,
    family_refusal,
    methods,
    present_methods,
    register_method,
    registered,
    unregister_method,
)
from autopeft_service.domain.param_count import count_parameters
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.spaces import FAMILIES, SearchSpaceBase, space_for_backbone

ROOT = Path(__file__).resolve().parents[2]
#: One small default space per family, on MiniLM (6 layers).
SPACES: dict[str, SearchSpaceBase] = {kind: space_for_backbone(kind, MINILM_DIMS)
                                      for kind in FAMILIES}
L = MINILM_DIMS.num_layers
#: One configuration of each built-in method alone, on MiniLM.
ALONE: dict[str, dict[str, Any]] = {
    "serial_adapters": {"serial_adapters": [{"sizes": [8] * L}]},
    "parallel_adapters": {"parallel_adapters": [{"sizes": [8] * L}]},
    "prefix": {"prefix": {"lengths": [4] * L}},
    "lora": {"lora": [{"ranks": [8] * L}]},
    "bitfit": {"bitfit": {"layers": [True] * L}},
    "ia3": {"ia3": {"layers": [True] * L}},
}
LORA = {"lora": [{"ranks": [4] * L}]}


class DummyConfig(BaseModel):
    """A new method's configuration: per layer, whether it is there (one parameter each)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    layers: tuple[bool, ...]


class DummyPeftConfig(PeftConfig):
    """``PeftConfig`` with the new method's field, as a real method would add it."""

    dummy: DummyConfig | None = None


def dummy_method(families: frozenset[str] = frozenset(),
                 export: PeftForm | str = NO_PEFT_FORM) -> MethodDescriptor:
    """The new method's descriptor: one trainable parameter per layer it is in."""
    def used(value: DummyConfig | None) -> int:
        return 0 if value is None else sum(value.layers)

    return MethodDescriptor(
        field="dummy", label="Dummy", summary="a method for tests",
        per_layer=lambda v: [] if v is None else [("layers", v.layers)],
        present=lambda v: used(v) > 0,
        count=lambda v, dims: {"dummy": (used(v), used(v))} if used(v) else {},
        describe=lambda v: [f"dummy[{used(v)} layers]"] if used(v) else [],
        families=families, export=export)


def with_dummy(base: dict[str, Any] | PeftConfig, layers: int = L) -> DummyPeftConfig:
    """``base`` (a configuration or its fields) with the dummy method in every layer."""
    fields = base.model_dump() if isinstance(base, PeftConfig) else {"num_layers": layers,
                                                                     **base}
    return DummyPeftConfig.model_validate({**fields, "dummy": {"layers": [True] * layers}})


@pytest.fixture
def dummy() -> Iterator[MethodDescriptor]:
    """The dummy method registered, in no family and without a peft form."""
    with registered(dummy_method()) as method:
        yield method


# ----------------------------------------------------------------------------- the registry


def test_registering_adds_a_method_and_the_fixture_removes_it() -> None:
    with registered(dummy_method()) as method:
        assert methods() == (*METHODS, method)
        with pytest.raises(ValueError, match="already registered"):
            register_method(dummy_method())
    assert methods() == METHODS
    with pytest.raises(ValueError, match="built-in"):
        unregister_method("lora")
    with pytest.raises(ValueError, match="no method is registered"):
        unregister_method("dummy")


def test_a_registered_method_is_validated_counted_and_described(dummy) -> None:
    config = with_dummy(LORA)
    assert [m.field for m in present_methods(config)] == ["lora", "dummy"]
    assert config.describe().endswith(" + dummy[6 layers]")
    assert count_parameters(config, MINILM_DIMS).by_method["dummy"] == L
    assert with_dummy({}).has_modules
    with pytest.raises(ConfigError, match=r"dummy\.layers: has 5 entries"):
        DummyPeftConfig.from_dict({"num_layers": L, "dummy": {"layers": [True] * 5}})
    # configurations without the field still validate while it is registered
    assert PeftConfig.from_dict({"num_layers": L, **LORA}).describe() == "lora[4x6:query,value]"


# ----------------------------------------------------------------------------- spaces


def _point_config(space: SearchSpaceBase) -> PeftConfig:
    """A valid point's configuration of ``space`` (the first one found from a fixed seed)."""
    rng = random.Random(0)
    while True:
        point = space.canonical({p.name: rng.choice(p.values) for p in space.parameters()})
        if space.is_valid(point):
            return space.decode(point)


@pytest.mark.parametrize("kind", sorted(FAMILIES))
@pytest.mark.parametrize("listed", [False, True])
def test_every_space_refuses_or_accepts_the_new_method_as_its_descriptor_says(
        kind: str, listed: bool) -> None:
    space = SPACES[kind]
    config = with_dummy(_point_config(space))
    with registered(dummy_method(families=frozenset({kind}) if listed else frozenset())):
        if not listed:
            with pytest.raises(ConfigError, match=rf"^dummy: config uses Dummy, a method "
                                                  rf"outside the {kind} space \(no search"):
                space.encode(config)
            return
        assert family_refusal(config, kind) is None
        # past the family check, the space finds no point of its own that holds it
        with pytest.raises(ConfigError) as refused:
            space.encode(config)
        assert "outside the" not in str(refused.value)


@pytest.mark.parametrize("kind", sorted(FAMILIES))
@pytest.mark.parametrize("field", sorted(ALONE))
def test_every_space_refuses_a_built_in_method_its_descriptor_does_not_list(
        kind: str, field: str) -> None:
    method = next(m for m in METHODS if m.field == field)
    config = PeftConfig.from_dict({"num_layers": L, **ALONE[field]})
    if kind in method.families:
        assert family_refusal(config, kind) is None
        return
    with pytest.raises(ConfigError, match=rf"^{field}: config uses .*outside the {kind} space"):
        SPACES[kind].encode(config)


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_the_methods_a_space_decodes_are_exactly_those_whose_descriptors_list_it(
        kind: str) -> None:
    space, rng, seen = SPACES[kind], random.Random(1), set()
    for _ in range(400):
        point = space.canonical({p.name: rng.choice(p.values) for p in space.parameters()})
        if space.is_valid(point):
            seen |= {m.field for m in present_methods(space.decode(point))}
    assert seen == {m.field for m in METHODS if kind in m.families}


def test_descriptors_name_only_known_families() -> None:
    assert set().union(*(m.families for m in METHODS)) <= set(FAMILIES)


def test_full_finetuning_is_outside_every_space() -> None:
    config = PeftConfig(num_layers=L, full_finetuning=True)
    for kind, space in SPACES.items():
        with pytest.raises(ConfigError, match=f"^full_finetuning: .*outside the {kind} space"):
            space.encode(config)


# ----------------------------------------------------------------------------- export


def test_export_refuses_a_method_without_a_peft_form_by_name_when_mixed_with_lora(
        dummy) -> None:
    assert export_refusal(with_dummy(LORA)) == f"Dummy: {NO_PEFT_FORM}"
    assert export_refusal(with_dummy({})) == f"Dummy: {NO_PEFT_FORM}"
    assert export_refusal(PeftConfig.from_dict({"num_layers": L, **LORA})) is None


def test_a_declared_peft_form_exports_alone_is_refused_in_a_mixture_and_by_its_condition(
        ) -> None:
    def one_layer_only(value: DummyConfig) -> str | None:
        return None if sum(value.layers) == 1 else f"{sum(value.layers)} layers, peft takes 1"

    with registered(dummy_method(export=PeftForm("DUMMY", condition=one_layer_only))):
        alone = DummyPeftConfig.from_dict({"num_layers": L,
                                           "dummy": {"layers": [True] + [False] * (L - 1)}})
        assert export_refusal(alone) is None
        assert export_refusal(with_dummy(LORA)).startswith("a mixture (Dummy + LoRA)")
        assert export_refusal(with_dummy({})) == "Dummy: 6 layers, peft takes 1"


@pytest.mark.parametrize("field", sorted(ALONE))
def test_a_built_in_method_alone_exports_exactly_when_its_descriptor_declares_a_form(
        field: str) -> None:
    method = next(m for m in METHODS if m.field == field)
    reason = export_refusal(PeftConfig.from_dict({"num_layers": L, **ALONE[field]}))
    if isinstance(method.export, PeftForm):
        assert reason is None
    else:
        assert reason == f"{method.label}: {method.export}"


# ----------------------------------------------------------------------------- the recipe


def _recipe_files(text: str) -> list[str]:
    """The file each numbered step of a recipe names first (``1. ``domain/methods.py``...``)."""
    return sorted(re.findall(r"^\s*\d+\.\s+\W*((?:domain|workers)/[\w/<>]+\.py)", text, re.M))


def test_contributing_and_the_registry_docstring_name_the_same_three_files() -> None:
    import autopeft_service.domain.methods as module

    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    section = contributing.split("## Adding a PEFT method", 1)[1].split("\n## ", 1)[0]
    expected = ["domain/methods.py", "domain/peft_config.py", "workers/peft/<method>.py"]
    assert _recipe_files(section) == expected
    assert module.__doc__ is not None and _recipe_files(module.__doc__) == expected

