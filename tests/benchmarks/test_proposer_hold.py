"""The hostile-studies benchmark (benchmarks/proposer_hold.py): its specs are the issue's
case, and its smoke mode is small."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from autopeft_service.domain.study import StudySpec
from tests.benchmarks.conftest import load_benchmark

ph = load_benchmark("proposer_hold")


def test_hostile_specs_are_accepted_except_where_the_space_is_smaller_than_the_budget() -> None:
    for kind, optimizer in ph.HOSTILE:
        spec = ph.hostile_spec(kind, optimizer, 256, 100_000, 10_000)
        if kind == "lora":  # 1,764 configurations on 256 layers: refused (422 over HTTP)
            with pytest.raises(ValidationError, match="exceeds the 1764 valid"):
                StudySpec.model_validate(spec)
        else:
            assert StudySpec.model_validate(spec).budget.total_trials == 100_000
    assert StudySpec.model_validate(ph.normal_spec()).budget.max_parallel == 4


def test_smoke_mode_is_small_and_percentiles_are_nearest_rank() -> None:
    args = ph.parse_args(["--smoke"])
    assert (args.layers, args.budget, args.settle, args.read_seconds) == (64, 20_000, 3.0, 5.0)
    assert ph.percentile([float(v) for v in range(1, 101)], 0.99) == 100.0
