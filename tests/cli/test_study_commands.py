"""``autopeft status``'s best line names both shares."""

from __future__ import annotations

from autopeft_service.cli.study_commands import _shares
from autopeft_service.domain.views import TrialSummary


def _trial(**shares: float | None) -> TrialSummary:
    return TrialSummary(id=1, number=0, state="completed", generator="sobol", attempt=1,
                        params={}, config={}, config_description="prefix[10x6]", worker=None,
                        objective=0.8, param_share=0.203, dev_score=0.79, failure_reason=None,
                        progress=None, result=None, created_at=0.0, leased_at=None,
                        finished_at=None, **shares)


def test_best_line_shows_deployed_and_trainable_share() -> None:
    assert _shares(_trial(deployed_share=0.2029, trainable_share=4.1659)) == (
        "deployed 0.203 %, trainable 4.166 %")


def test_an_older_server_without_both_shares_shows_the_objective() -> None:
    assert _shares(_trial()) == "0.203 % of parameters"
