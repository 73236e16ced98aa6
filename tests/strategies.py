"""Hypothesis strategies for random PEFT configurations (shared by domain and worker tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from autopeft_service.domain.peft_config import (
    BitFitConfig,
    IA3Config,
    IA3Target,
    LoraConfig,
    LoraTarget,
    ParallelAdapterConfig,
    PeftConfig,
    Position,
    PrefixConfig,
    SerialAdapterConfig,
)


def per_layer_sizes(num_layers: int, max_size: int = 8) -> st.SearchStrategy[tuple[int, ...]]:
    """Sizes per layer, with plenty of zeros (absent layers)."""
    size = st.one_of(st.just(0), st.integers(1, max_size))
    return st.tuples(*[size] * num_layers)


def flags(num_layers: int) -> st.SearchStrategy[tuple[bool, ...]]:
    return st.tuples(*[st.booleans()] * num_layers)


@st.composite
def peft_configs(draw: st.DrawFn, num_layers: int) -> PeftConfig:
    """Any combination of methods, each present or not, with per-layer sizes."""
    positions = draw(st.lists(st.sampled_from(list(Position)), unique=True, max_size=2))
    serial = tuple(SerialAdapterConfig(sizes=draw(per_layer_sizes(num_layers)), position=p,
                                       activation=draw(st.sampled_from(["relu", "gelu", "tanh"])))
                   for p in positions)
    positions = draw(st.lists(st.sampled_from(list(Position)), unique=True, max_size=2))
    parallel = tuple(ParallelAdapterConfig(sizes=draw(per_layer_sizes(num_layers)), position=p,
                                           scale=draw(st.sampled_from([1.0, 4.0])),
                                           learned_scale=draw(st.booleans()))
                     for p in positions)
    prefix = draw(st.none() | st.builds(
        PrefixConfig, lengths=per_layer_sizes(num_layers, 6), reparameterize=st.booleans(),
        mlp_width=st.integers(1, 16)))
    # Up to two LoRA modules on disjoint projections, each with its own ranks and scale.
    # every projection but the gate, which only Llama-family FFNs have (tests/workers/peft/
    # test_decoders.py covers it)
    targets = draw(st.lists(st.sampled_from([t for t in LoraTarget if t is not LoraTarget.FFN_GATE]),
                            unique=True, max_size=6))
    cut = draw(st.integers(0, len(targets)))
    lora = tuple(draw(st.builds(
        LoraConfig, ranks=per_layer_sizes(num_layers, 4), targets=st.just(tuple(part)),
        alpha=st.sampled_from([1.0, 16.0]), alpha_per_rank=st.sampled_from([None, 2.0])))
        for part in (targets[:cut], targets[cut:]) if part)
    bitfit = draw(st.none() | st.builds(BitFitConfig, layers=flags(num_layers)))
    ia3 = draw(st.none() | st.builds(
        IA3Config, layers=flags(num_layers),
        targets=st.lists(st.sampled_from(list(IA3Target)), unique=True, min_size=1).map(tuple)))
    return PeftConfig(num_layers=num_layers, serial_adapters=serial, parallel_adapters=parallel,
                      prefix=prefix, lora=lora, bitfit=bitfit, ia3=ia3)
