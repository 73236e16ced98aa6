"""Hand-crafted PEFT baselines that a search's Pareto front is compared with.

``autopeft retrain --baselines NAME ...`` trains these beside the chosen trials. Each is a
``PeftConfig`` built for the backbone's number of layers (every method in every layer)
plus the training settings it overrides:

| name | configuration | reference |
|---|---|---|
| ``lora-r8-qv`` | LoRA rank 8 (alpha 16) on query and value | Hu et al. 2022 |
| ``serial-adapter-64`` | serial adapter 64 on the FFN output, before its LayerNorm | Houlsby 2019 |
| ``parallel-adapter`` | parallel adapter 64 beside the FFN, scale 4 | He et al. 2022 |
| ``prefix-30`` | prefix length 30, MLP reparameterisation (width 800) | Li & Liang 2021 |
| ``mam`` | prefix 16 (MLP 800) + parallel adapter 16 at the FFN, scale 2 | He et al. 2022, GLUE |
| ``head-only`` | no module: only the task head trains | |
| ``full-ft`` | full fine-tuning, learning rate 1e-4 | |

Choices: the parallel adapter is He et al.'s scaled parallel adapter at the FFN (the
placement and scale s = 4 of their XSum MAM adapter) with the serial baseline's bottleneck
of 64, so the two adapters differ only in form. Full fine-tuning trains at 1e-4 (as
``benchmarks/trial_speed.py``), a usual rate for updating a whole pretrained encoder and
far below the 1e-3 default meant for small new modules; every other baseline keeps the
settings it is given.

The MAM adapter is He et al.'s **GLUE** setting, from their released script
``exps/run_glue.sh`` (github.com/jxhe/unify-parameter-efficient-tuning, commit 3222ce2,
block ``# ----- MAM adapter -----``), mapped to ``PeftConfig`` fields:

| script variable | value | here |
|---|---|---|
| ``attn_mode`` / ``attn_option`` | ``prefix`` / ``concat`` | ``prefix`` (prefix tuning at self-attention) |
| ``attn_bn`` | 16 | ``PrefixConfig.lengths`` = 16 in every layer |
| ``--mid_dim`` (command line) | 800 | ``PrefixConfig.mlp_width`` = 800 |
| ``attn_mode`` ``prefix`` (not ``prefix_nomlp``) | MLP, tanh (``petl``'s ``Prefix``) | ``reparameterize`` = True |
| ``ffn_mode`` / ``ffn_option`` | ``adapter`` / ``parallel`` | ``parallel_adapters``, ``position`` = ffn |
| ``ffn_bn`` | 16 | ``ParallelAdapterConfig.sizes`` = 16 in every layer |
| ``ffn_adapter_scalar`` | 2 | ``ParallelAdapterConfig.scale`` = 2.0 (fixed, not learned) |
| ``ffn_adapter_layernorm_option`` | ``none`` | no adapter LayerNorm (none here either) |
| ``ffn_adapter_init_option`` | ``lora`` (W_up = 0) | W_up starts at zero (as here) |

The parallel adapter reads the FFN input (``attention_output``) and adds to the FFN output
before the residual and LayerNorm (``modeling_roberta.py``, ``feed_forward_chunk`` and
``RobertaOutput``), as ``ParallelAdapterConfig`` does. Until issue 30 this baseline was the
XSum setting of ``exps/run_xsum.sh`` (prefix 30 + parallel adapter 512, scale 4: 11.02 %
of MiniLM-L6, a bottleneck wider than its hidden size). One difference stays: He et al.'s
prefix MLP maps one (l x d) prefix embedding to every layer's keys and values
(d -> 800 -> 2 L d; ``petl/petl_factory.py``, ``Prefix``), ours maps a per-layer
(l x d) embedding through one shared d -> 800 -> 2d MLP; the deployed prefixes are the same
size (2 l d a layer), the trainable count differs (``docs/papers.md``).

Pure Python (pydantic only), like the rest of the domain layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.peft_config import (
    LoraConfig,
    LoraTarget,
    ParallelAdapterConfig,
    PeftConfig,
    Position,
    PrefixConfig,
    SerialAdapterConfig,
)
from autopeft_service.domain.trial import TrainingSettings

#: The word that selects every baseline.
ALL = "all"


@dataclass(frozen=True)
class Baseline:
    """A named hand-crafted configuration.

    Attributes:
        name: the catalogue name (``lora-r8-qv``, ...).
        summary: one line saying what it is.
        build: the configuration for a backbone with the given number of layers.
        training: TrainingSettings fields this baseline always trains with.
    """

    name: str
    summary: str
    build: Callable[[int], PeftConfig]
    training: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def config(self, num_layers: int) -> PeftConfig:
        """The configuration for a backbone with ``num_layers`` layers."""
        return self.build(num_layers)

    def settings(self, base: TrainingSettings) -> TrainingSettings:
        """``base`` with this baseline's overrides.

        Raises:
            ConfigError: an override is invalid (names the field).
        """
        if not self.training:
            return base
        return TrainingSettings.from_dict({**base.model_dump(), **self.training})


def _lora(num_layers: int) -> PeftConfig:
    return PeftConfig(num_layers=num_layers, lora=LoraConfig(
        ranks=(8,) * num_layers, targets=(LoraTarget.QUERY, LoraTarget.VALUE), alpha=16.0))


def _serial_adapter(num_layers: int) -> PeftConfig:
    return PeftConfig(num_layers=num_layers, serial_adapters=(
        SerialAdapterConfig(sizes=(64,) * num_layers, position=Position.FFN),))


def _parallel_adapter(num_layers: int) -> PeftConfig:
    return PeftConfig(num_layers=num_layers, parallel_adapters=(
        ParallelAdapterConfig(sizes=(64,) * num_layers, position=Position.FFN, scale=4.0),))


def _prefix(num_layers: int) -> PeftConfig:
    return PeftConfig(num_layers=num_layers, prefix=PrefixConfig(
        lengths=(30,) * num_layers, reparameterize=True, mlp_width=800))


def _mam(num_layers: int) -> PeftConfig:
    return PeftConfig(
        num_layers=num_layers,
        prefix=PrefixConfig(lengths=(16,) * num_layers, reparameterize=True, mlp_width=800),
        parallel_adapters=(ParallelAdapterConfig(sizes=(16,) * num_layers,
                                                 position=Position.FFN, scale=2.0),))


def _head_only(num_layers: int) -> PeftConfig:
    return PeftConfig(num_layers=num_layers)


def _full_finetuning(num_layers: int) -> PeftConfig:
    return PeftConfig(num_layers=num_layers, full_finetuning=True)


#: The catalogue, in the order reports list it.
BASELINES: Mapping[str, Baseline] = MappingProxyType({b.name: b for b in (
    Baseline("lora-r8-qv", "LoRA r=8 on query and value, all layers", _lora),
    Baseline("serial-adapter-64", "serial adapter 64 after the FFN, all layers", _serial_adapter),
    Baseline("parallel-adapter", "parallel adapter 64 beside the FFN, scale 4, all layers",
             _parallel_adapter),
    Baseline("prefix-30", "prefix length 30 (MLP reparameterised), all layers", _prefix),
    Baseline("mam", "MAM adapter (He et al.'s GLUE setting): prefix 16 + parallel adapter 16 "
             "at the FFN, scale 2", _mam),
    Baseline("head-only", "no PEFT module: only the task head trains", _head_only),
    Baseline("full-ft", "full fine-tuning at learning rate 1e-4", _full_finetuning,
             MappingProxyType({"learning_rate": 1e-4})),
)})


def select_baselines(names: Sequence[str]) -> list[Baseline]:
    """The baselines named, in the order given, each once; ``all`` stands for every one.

    Raises:
        ConfigError: a name is not in the catalogue (the message lists the known ones).
    """
    chosen: dict[str, Baseline] = {}
    for name in names:
        if name == ALL:
            chosen.update((n, b) for n, b in BASELINES.items() if n not in chosen)
        elif name in BASELINES:
            chosen.setdefault(name, BASELINES[name])
        else:
            raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)} "
                              f"(or {ALL})")
    return list(chosen.values())
