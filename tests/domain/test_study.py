"""Study validation: a budget the search space cannot hold is refused at creation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from autopeft_service.domain.study import StudySpec
from autopeft_service.domain.validation import format_validation_error

WIDE_DIMS = {"num_layers": 256, "hidden_size": 384, "num_heads": 12, "ffn_size": 1536,
             "total_parameters": 22_713_216}


def _spec(kind: str, total: int) -> dict[str, object]:
    return {"name": "s", "backbone": "b", "task": "synthetic", "backbone_dims": WIDE_DIMS,
            "search_space": {"kind": kind},
            "budget": {"total_trials": total, "initial_trials": 1},
            "optimizer": {"name": "random"}}


def test_a_budget_beyond_the_spaces_configurations_is_refused_naming_budget() -> None:
    """Issue 31: a finite space's cardinality is cheap to know, so a budget past it is a
    422 naming ``budget.total_trials`` (the API turns this error into one), not a study
    that waits for ever."""
    size = StudySpec.model_validate(_spec("lora", 1)).space.size()
    assert StudySpec.model_validate(_spec("lora", size)).budget.total_trials == size
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(_spec("lora", 100_000))
    assert format_validation_error(caught.value).startswith(
        f"budget.total_trials: 100000 exceeds the {size} valid configurations")
