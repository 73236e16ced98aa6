"""Every family's random valid points build models whose trainable count is the analytic one,
and whose stored count (the prefix MLP folded away) is the analytic deployed one.

This is what makes the server's share exact: the worker builds ``space.decode(point)`` and
must find the parameters the server counted (it checks, and so does the server).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from autopeft_service.domain import count_parameters
from autopeft_service.domain.spaces import FAMILIES, SearchSpaceBase, space_for_backbone
from tests.domain.spaces.strategies import valid_points
from tests.workers.peft.conftest import make_encoder
from tests.workers.peft.test_decoders import make_decoder
from workers.peft import apply_peft, trainable_parameter_count
from workers.peft.prefix import PrefixEncoder

_, DIMS = make_encoder("bert")
OVERRIDES: dict[str, dict[str, Any]] = {
    # the tiny encoder has ~40k parameters: budgets large enough for its modules
    "design_space": {"budgets": (5.0, 10.0, 20.0), "max_groups": 3},
    "lora": {"granularity": "layer"},
}
SPACES: dict[str, SearchSpaceBase] = {
    kind: space_for_backbone(kind, DIMS, **OVERRIDES.get(kind, {})) for kind in FAMILIES}
#: The families on a grouped-query Llama and on GPT-2 (the design space's budgets priced
#: from their own shapes; BitFit points invalid on the Llama).
DECODER_SPACES: dict[tuple[str, str], SearchSpaceBase] = {
    (model_type, kind): space_for_backbone(kind, make_decoder(model_type)[2],
                                           **OVERRIDES.get(kind, {}))
    for model_type in ("llama", "gpt2") for kind in FAMILIES}


def _build(model_type: str) -> tuple[Any, Any]:
    if model_type == "bert":
        return make_encoder("bert")
    backbone, _, dims = make_decoder(model_type)
    return backbone, dims


@pytest.mark.parametrize(("model_type", "kind"), [("bert", kind) for kind in sorted(SPACES)]
                         + sorted(DECODER_SPACES))
def test_built_trainable_count_equals_the_analytic_count(model_type: str, kind: str) -> None:
    space = SPACES[kind] if model_type == "bert" else DECODER_SPACES[model_type, kind]

    @settings(max_examples=12, deadline=None,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(valid_points(space))
    def check(point: dict[str, Any]) -> None:
        model, dims = _build(model_type)
        config = space.decode(point)
        apply_peft(model, config, dims)
        counts = count_parameters(config, dims)
        assert trainable_parameter_count(model) == counts.trainable > 0
        # What is stored per task: the prefix MLP folded into its keys and values.
        for module in list(model.modules()):
            if isinstance(module, PrefixEncoder):
                module.fold()
        assert trainable_parameter_count(model) == counts.deployed <= counts.trainable

    check()
