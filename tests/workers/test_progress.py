"""Trial progress for people: the runner's observer seam, the plain-line and rich renderers,
and the worker's progress log (tiny random models only)."""

from __future__ import annotations

import io
import logging
import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from autopeft_service.domain import PeftConfig, TrainingSettings
from autopeft_service.domain.protocol import HeartbeatOut, LeaseOut, ReportOut
from workers.data import TokenizedCache, holdout_split
from workers.data.synthetic_lm import synthetic_lm_vocabulary
from workers.progress import (
    LineProgress,
    Phase,
    RichProgress,
    TrialObserver,
    estimate_remaining,
    format_duration,
)
from workers.tiny_model import write_tiny_decoder
from workers.trial import TrialRequest, TrialRunner
from workers.worker import Worker

TRAIN, HELD_OUT, DEV = 150, 70, 90
SETTINGS = TrainingSettings(epochs=1, batch_size=32, eval_batch_size=32, max_length=24,
                            max_train_examples=TRAIN, max_held_out_examples=HELD_OUT,
                            max_dev_examples=DEV, learning_rate=3e-3)
CONFIG = PeftConfig.from_dict({"num_layers": 2, "lora": {"ranks": [2, 2]}})


@dataclass
class Recorder(TrialObserver):
    """Keeps every call: phases with totals, and the counts reported in each phase."""

    phases: list[tuple[Phase, int | None]] = field(default_factory=list)
    counts: dict[Phase, list[int]] = field(default_factory=dict)
    losses: list[float | None] = field(default_factory=list)
    finished: int = 0

    def phase(self, phase: Phase, total: int | None = None) -> None:
        self.phases.append((phase, total))
        self.counts[phase] = []

    def advance(self, done: int, loss: float | None = None) -> None:
        self.counts[self.phases[-1][0]].append(done)
        if self.phases[-1][0] is Phase.TRAINING:
            self.losses.append(loss)

    def done(self) -> None:
        self.finished += 1


@pytest.fixture
def runner(tmp_path: Path) -> TrialRunner:
    return TrialRunner(cache=TokenizedCache(tmp_path / "cache"))


def _request(model: Path) -> TrialRequest:
    return TrialRequest(model=model, task="synthetic", config=CONFIG, settings=SETTINGS)


def test_observer_sees_every_phase_in_order_with_full_counts(
        runner: TrialRunner, tiny_bert_path: Path, tmp_path: Path) -> None:
    seen = Recorder()
    result = runner.run(_request(tiny_bert_path), observer=seen,
                        artifact_dir=tmp_path / "artifact")
    assert [phase for phase, _ in seen.phases] == list(Phase)
    totals = dict(seen.phases)
    steps = math.ceil(TRAIN / SETTINGS.batch_size)
    assert totals[Phase.TRAINING] == result.steps == steps
    assert seen.counts[Phase.TRAINING] == list(range(1, steps + 1))  # every step, in order
    assert seen.losses[-1] == result.final_loss
    for phase, size in ((Phase.SCORING_HELD_OUT, HELD_OUT), (Phase.SCORING_DEV, DEV)):
        batches = math.ceil(size / SETTINGS.eval_batch_size)
        assert totals[phase] == size
        assert seen.counts[phase] == [min(size, (b + 1) * SETTINGS.eval_batch_size)
                                      for b in range(batches)]
    assert all(totals[p] is None for p in (Phase.LOADING_DATA, Phase.LOADING_MODEL,
                                           Phase.TOKENISING, Phase.BUILDING, Phase.SAVING))
    assert seen.finished == 1


def test_a_retraining_run_skips_held_out_and_saving(runner: TrialRunner,
                                                    tiny_bert_path: Path) -> None:
    seen = Recorder()
    runner.run(replace(_request(tiny_bert_path), hold_out=False), observer=seen)
    phases = [phase for phase, _ in seen.phases]
    assert phases == [p for p in Phase if p not in (Phase.SCORING_HELD_OUT, Phase.SAVING)]
    assert seen.counts[Phase.SCORING_DEV][-1] == DEV


def test_language_model_scoring_reports_every_example(runner: TrialRunner,
                                                     tmp_path: Path) -> None:
    """The causal-LM scoring loop (log-likelihood, not predictions) reports its counts too."""
    decoder = write_tiny_decoder(tmp_path / "llama", synthetic_lm_vocabulary())
    seen = Recorder()
    settings = SETTINGS.model_copy(update={"max_length": 16, "max_train_examples": 32})
    request = TrialRequest(model=decoder, task="synthetic-lm", settings=settings,
                           config=PeftConfig.from_dict({"num_layers": 2,
                                                        "lora": {"ranks": [2, 2]}}))
    runner.run(request, observer=seen)
    task = runner.task(request)
    _, held_out = holdout_split(task.train, settings.held_out_fraction, settings.data_seed,
                                settings.max_held_out_examples)
    sizes = {Phase.SCORING_HELD_OUT: len(held_out),
             Phase.SCORING_DEV: min(len(task.dev), DEV)}
    assert [phase for phase, _ in seen.phases] == [p for p in Phase if p is not Phase.SAVING]
    for phase, size in sizes.items():
        assert dict(seen.phases)[phase] == size and seen.counts[phase][-1] == size


def test_a_failing_trial_reports_no_done(runner: TrialRunner, tmp_path: Path) -> None:
    seen = Recorder()
    with pytest.raises(Exception, match="not a model folder"):
        runner.run(_request(tmp_path / "missing"), observer=seen)
    assert [phase for phase, _ in seen.phases] == [Phase.LOADING_DATA, Phase.LOADING_MODEL]
    assert seen.finished == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_progress_writes_phase_starts_and_throttled_counts_with_an_eta() -> None:
    lines: list[str] = []
    clock = FakeClock()
    progress = LineProgress(lines.append, interval=10, prefix="trial 7", clock=clock)
    progress.phase(Phase.LOADING_MODEL)
    progress.phase(Phase.TRAINING, 40)
    for step in range(1, 10):  # 9 steps of 2 s: one count line, at 10 s
        clock.now += 2
        progress.advance(step, loss=0.5)
    progress.phase(Phase.SCORING_DEV, 872)
    clock.now += 30
    progress.advance(436)
    progress.done()
    assert lines == [
        "trial 7: loading model",
        "trial 7: training (40 steps)",
        "trial 7: training 5/40 steps (12%), loss 0.5000, ETA 1m10s",
        "trial 7: scoring dev (872 examples)",
        "trial 7: scoring dev 436/872 examples (50%), ETA 30s",
        "trial 7: done in 48s",
    ]


def test_eta_and_durations() -> None:
    assert estimate_remaining(10.0, 0, 5) is None
    assert estimate_remaining(10.0, 5, 5) == 0.0
    assert estimate_remaining(10.0, 1, 4) == 30.0
    assert [format_duration(s) for s in (None, 4.4, 65, 3725)] == ["?", "4s", "1m05s", "1h02m"]


def test_rich_progress_draws_one_row_per_phase(runner: TrialRunner,
                                               tiny_bert_path: Path) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=140)
    with RichProgress(console) as progress:
        runner.run(_request(tiny_bert_path), observer=progress)
    drawn = screen.getvalue()
    for phase in Phase:
        if phase is not Phase.SAVING:
            assert phase.value in drawn
    steps = math.ceil(TRAIN / SETTINGS.batch_size)
    assert f"{steps}/{steps} steps" in drawn and f"{DEV}/{DEV} examples" in drawn
    assert Phase.SAVING.value not in drawn


def _lease(model: Path) -> LeaseOut:
    return LeaseOut(trial_id=41, study_id=1, number=0, attempt=1, token="t", deadline=0.0,
                    lease_seconds=600.0, params={}, config=CONFIG, backbone=str(model),
                    task="synthetic", data_dir=None, task_options={}, training=SETTINGS,
                    seed=0)


class StubClient:
    """Takes heartbeats and results in memory (what ``Worker.run_trial`` needs)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.results: list[Any] = []

    def heartbeat(self, *args: Any, **kwargs: Any) -> HeartbeatOut:
        return HeartbeatOut(deadline=None, stop=False)

    def report_result(self, trial_id: int, token: str, result: Any,
                      interruptible: bool = True) -> ReportOut:
        self.results.append(result)
        return ReportOut(trial_id=trial_id, state="completed", attempt=1, failure_reason=None,
                         duplicate=False)


def test_worker_logs_each_phase_of_a_trial_at_info(runner: TrialRunner, tiny_bert_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    client = StubClient()
    worker = Worker(client, runner)  # type: ignore[arg-type]  # a stub, not a ServerClient
    with caplog.at_level(logging.INFO, logger="workers.worker"):
        worker.run_trial(_lease(tiny_bert_path))
    assert worker.stats.completed == 1 and len(client.results) == 1
    lines = [r.getMessage() for r in caplog.records
             if r.levelno == logging.INFO and r.getMessage().startswith("trial 41: ")]
    expected = [p for p in Phase if p is not Phase.SAVING]
    assert [line.removeprefix("trial 41: ").split(" (")[0] for line in lines[:-1]] == [
        p.value for p in expected]
    assert lines[-1].startswith("trial 41: done in ")  # no line per step: a short trial
