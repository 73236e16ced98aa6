"""The Pareto table's two share columns: deployed and trainable, the objective marked."""

from __future__ import annotations

from rich.console import Console

from autopeft_service.cli.tables import pareto_table
from autopeft_service.domain.views import ParetoOut
from tests.cli.test_studies import _trial


def _render(pareto: ParetoOut) -> list[str]:
    console = Console(width=120, record=True, highlight=False)
    console.print(pareto_table(pareto, "front"))
    return console.export_text().splitlines()


def test_a_trainable_objective_marks_the_trainable_column() -> None:
    prefix = _trial(4, "prefix[10x6]", objective=0.8, dev_score=0.8, param_share=4.166,
                    deployed_share=0.203, trainable_share=4.166)
    lines = _render(ParetoOut(study_id=1, hypervolume=1.0, param_share_count="trainable",
                              reference_point={"score": 0.0, "param_share": 10.0},
                              trials=[prefix]))
    header = [line for line in lines if line.startswith("┃")]
    assert header[0].endswith("┃ deployed ┃ trainable ┃")
    assert header[1].endswith("┃        % ┃        %* ┃")
    [row] = [line for line in lines if line.startswith("│")]
    assert row.endswith("│    0.203 │     4.166 │")


def test_a_server_without_both_shares_fills_the_objective_column() -> None:
    """An older server sends param_share only (and no param_share_count: deployed)."""
    old = _trial(2, "lora[8x6]", objective=0.8, dev_score=0.8, param_share=0.325)
    pareto = ParetoOut.model_validate({"study_id": 1, "hypervolume": 1.0,
                                       "reference_point": {"score": 0.0, "param_share": 10.0},
                                       "trials": [old.model_dump(exclude={
                                           "deployed_share", "trainable_share"})]})
    assert pareto.param_share_count == "deployed"
    [row] = [line for line in _render(pareto) if line.startswith("│")]
    assert row.endswith("│    0.325 │         - │")


def test_the_model_front_shows_the_prediction_and_its_interval() -> None:
    from autopeft_service.domain.views import PredictionOut

    trial = _trial(3, "lora[8x6]", objective=0.81, dev_score=0.8, param_share=0.325,
                   deployed_share=0.325, trainable_share=0.325)
    trial.predicted = PredictionOut(mean=0.7912, low=0.7701, high=0.8123, level=0.9)
    lines = _render(ParetoOut(study_id=1, hypervolume=1.0, front="model",
                              reference_point={"score": 0.0, "param_share": 10.0},
                              trials=[trial]))
    assert any("90 % interval" in line for line in lines if line.startswith("┃"))
    [row] = [line for line in lines if line.startswith("│")]
    assert "0.7912 [0.7701, 0.8123]" in row
