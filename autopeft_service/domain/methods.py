"""PEFT methods, each described once: where its configuration lives in a ``PeftConfig``, how
many parameters it trains and deploys, its per-layer entries, and how it reads.

``PeftConfig`` (layer checks, ``has_modules``, ``describe``) and ``count_parameters`` walk
this registry; the worker's ``apply_peft`` walks its own registry of injectors
(``workers/peft/registry.py``), filled by each method's module. A new method is three
files: its config class and ``PeftConfig`` field (``peft_config.py``), its descriptor here,
and its module with an ``@injector`` (``workers/peft/<method>.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.peft_config import (
    IA3Target,
    LoraTarget,
    PeftConfig,
)

#: name -> (trainable, deployed) parameters of one method module (e.g. ``lora``).
Counts = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class MethodDescriptor:
    """One PEFT method as the domain sees it.

    Attributes:
        field: the ``PeftConfig`` attribute holding its configuration (an object, None, or
            a tuple of objects for methods that may appear more than once).
        summary: one line for humans (paper, form, position).
        per_layer: ``(path, entries)`` of every per-layer tuple in the configuration (the
            path relative to ``field``, e.g. ``0.sizes``), checked against ``num_layers``.
        present: whether the configuration builds a module somewhere.
        count: trainable and deployed parameters per reported name.
        describe: short readable parts, e.g. ``serial@ffn[64x6]``.
    """

    field: str
    summary: str
    per_layer: Callable[[Any], list[tuple[str, tuple[Any, ...]]]]
    present: Callable[[Any], bool]
    count: Callable[[Any, BackboneDims], Counts]
    describe: Callable[[Any], list[str]]


def _items(value: Any) -> list[Any]:
    """The configuration objects of a field: none, one, or a tuple of them."""
    if value is None:
        return []
    return list(value) if isinstance(value, tuple) else [value]


def sizes_label(values: Iterable[int]) -> str:
    """``64x6`` (one size, six layers) or ``8/16x4`` (sizes differ across the four layers)."""
    used = [v for v in values if v]
    distinct = sorted(set(used))
    core = f"{distinct[0]}" if len(distinct) == 1 else "/".join(map(str, distinct))
    return f"{core}x{len(used)}"


def adapter_parameters(hidden: int, bottleneck: int) -> int:
    """Down (d x r + r) plus up (r x d + d) projection; 0 for an absent adapter."""
    return 0 if bottleneck == 0 else 2 * hidden * bottleneck + bottleneck + hidden


def prefix_mlp_parameters(hidden: int, width: int, kv_size: int | None = None) -> int:
    """The shared reparameterising MLP: d -> width -> 2 * kv (kv = d without grouped-query
    attention), with biases."""
    kv = hidden if kv_size is None else kv_size
    return hidden * width + width + width * 2 * kv + 2 * kv


def lora_target_shape(target: LoraTarget, dims: BackboneDims) -> tuple[int, int]:
    """(in_features, out_features) of the projection a LoRA target adapts.

    Raises:
        ConfigError: ``ffn_gate`` on a backbone whose FFN has no gate projection.
    """
    d, f = dims.hidden_size, dims.ffn_size
    if target is LoraTarget.FFN_GATE and not dims.gated_ffn:
        raise ConfigError(f"lora.targets: ffn_gate: the {dims.model_type} backbone's FFN has no "
                          "gate projection (only Llama-family FFNs do)")
    return {
        LoraTarget.QUERY: (d, dims.query_size),
        LoraTarget.KEY: (d, dims.kv_size),
        LoraTarget.VALUE: (d, dims.kv_size),
        LoraTarget.ATTENTION_OUTPUT: (dims.query_size, d),
        LoraTarget.FFN_IN: (d, f),
        LoraTarget.FFN_GATE: (d, f),
        LoraTarget.FFN_OUT: (f, d),
    }[target]


def ia3_target_width(target: IA3Target, dims: BackboneDims) -> int:
    """Elements of the (IA)^3 vector of ``target``: key/value width, or the FFN width."""
    return dims.ffn_size if target is IA3Target.FFN else dims.kv_size


# ----------------------------------------------------------------------------- counts


def _serial_count(adapters: Any, dims: BackboneDims) -> Counts:
    out = {}
    for a in _items(adapters):
        n = sum(adapter_parameters(dims.hidden_size, r) for r in a.sizes)
        out[f"serial_adapter@{a.position.value}"] = (n, n)
    return out


def _parallel_count(adapters: Any, dims: BackboneDims) -> Counts:
    out = {}
    for a in _items(adapters):
        n = sum(adapter_parameters(dims.hidden_size, r) + int(a.learned_scale)
                for r in a.sizes if r)
        out[f"parallel_adapter@{a.position.value}"] = (n, n)
    return out


def _prefix_count(prefix: Any, dims: BackboneDims) -> Counts:
    if prefix is None or not any(prefix.lengths):
        return {}
    # keys and values per token (the key/value heads' width: d, or less under grouped-query
    # attention): what remains after training. The reparameterising MLP maps a d-wide
    # embedding to both.
    tokens, d, kv = sum(prefix.lengths), dims.hidden_size, dims.kv_size
    deployed = 2 * tokens * kv
    trained = (tokens * d + prefix_mlp_parameters(d, prefix.mlp_width, kv)
               if prefix.reparameterize else deployed)
    return {"prefix": (trained, deployed)}


def _lora_count(modules: Any, dims: BackboneDims) -> Counts:
    total = 0
    for lora in _items(modules):
        per_rank = sum(sum(lora_target_shape(t, dims)) for t in lora.targets)
        total += per_rank * sum(lora.ranks)
    return {"lora": (total, total)} if modules else {}


def _bitfit_count(bitfit: Any, dims: BackboneDims) -> Counts:
    if bitfit is None or not any(bitfit.layers):
        return {}
    if not dims.layer_bias_parameters:
        raise ConfigError(f"bitfit: the {dims.model_type} backbone's layers have no bias terms, "
                          "so BitFit has nothing to train; choose another method")
    n = dims.layer_bias_parameters * sum(bitfit.layers)
    return {"bitfit": (n, n)}


def _ia3_count(ia3: Any, dims: BackboneDims) -> Counts:
    if ia3 is None:
        return {}
    n = sum(ia3_target_width(t, dims) for t in ia3.targets) * sum(ia3.layers)
    return {"ia3": (n, n)}


# ----------------------------------------------------------------------------- registry


def _indexed(attribute: str) -> Callable[[Any], list[tuple[str, tuple[Any, ...]]]]:
    """Per-layer entries of every object of a tuple-valued field (``0.sizes`` ...)."""
    return lambda value: [(f"{i}.{attribute}", getattr(item, attribute))
                          for i, item in enumerate(_items(value))]


def _single(attribute: str) -> Callable[[Any], list[tuple[str, tuple[Any, ...]]]]:
    return lambda value: [] if value is None else [(attribute, getattr(value, attribute))]


#: Every method, in the order ``describe`` lists them.
METHODS: tuple[MethodDescriptor, ...] = (
    MethodDescriptor(
        field="serial_adapters", summary="Houlsby/Pfeiffer adapter, sequential form",
        per_layer=_indexed("sizes"),
        present=lambda v: any(any(a.sizes) for a in _items(v)), count=_serial_count,
        describe=lambda v: [f"serial@{a.position.value}[{sizes_label(a.sizes)}]"
                            for a in _items(v) if any(a.sizes)]),
    MethodDescriptor(
        field="parallel_adapters", summary="He et al.'s scaled parallel adapter",
        per_layer=_indexed("sizes"),
        present=lambda v: any(any(a.sizes) for a in _items(v)), count=_parallel_count,
        describe=lambda v: [f"parallel@{a.position.value}[{sizes_label(a.sizes)}]"
                            for a in _items(v) if any(a.sizes)]),
    MethodDescriptor(
        field="prefix", summary="Li & Liang's prefix tuning, gated parallel form at attention",
        per_layer=_single("lengths"),
        present=lambda v: v is not None and any(v.lengths), count=_prefix_count,
        describe=lambda v: [f"prefix[{sizes_label(v.lengths)}]"]
        if v is not None and any(v.lengths) else []),
    MethodDescriptor(
        field="lora", summary="Hu et al.'s LoRA, linear parallel form on projections",
        per_layer=_indexed("ranks"),
        present=lambda v: any(any(m.ranks) for m in _items(v)), count=_lora_count,
        describe=lambda v: [
            f"lora[{sizes_label(m.ranks)}:{','.join(t.value for t in m.targets)}]"
            for m in _items(v) if any(m.ranks)]),
    MethodDescriptor(
        field="bitfit", summary="Ben Zaken et al.'s BitFit: the layers' biases",
        per_layer=_single("layers"),
        present=lambda v: v is not None and any(v.layers), count=_bitfit_count,
        describe=lambda v: [f"bitfit[{sum(v.layers)} layers]"]
        if v is not None and any(v.layers) else []),
    MethodDescriptor(
        field="ia3", summary="Liu et al.'s (IA)^3: learned rescaling of keys, values, FFN",
        per_layer=_single("layers"),
        present=lambda v: v is not None and any(v.layers), count=_ia3_count,
        describe=lambda v: [f"ia3[{sum(v.layers)} layers]"]
        if v is not None and any(v.layers) else []),
)


def method_counts(config: PeftConfig, dims: BackboneDims) -> Counts:
    """Trainable and deployed parameters of every method module of ``config``."""
    out: Counts = {}
    for method in METHODS:
        for name, (trainable, deployed) in method.count(getattr(config, method.field),
                                                        dims).items():
            before = out.get(name, (0, 0))
            out[name] = (before[0] + trainable, before[1] + deployed)
    return out
