"""``autopeft retrain`` on the tiny random BERT and the synthetic task: a study on a real
server (uvicorn thread, SQLite file) whose trials a fake worker completes with the tiny
model's exact parameter shares, then re-training its Pareto trials and the baselines.

The heavy runs call ``main`` in this process (torch is already loaded, so each takes a few
seconds); one baseline run and the argument errors run as subprocesses."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autopeft_service.cli.main import main
from autopeft_service.client import AutopeftClient
from autopeft_service.domain import BackboneDims, count_parameters
from autopeft_service.domain.baselines import BASELINES
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.views import ParetoOut, StudyOut, TrialSummary
from autopeft_service.testing.server import CLIENT_TOKEN, WORKER_TOKEN, ServerThread
from tests.cli.test_studies import assert_one_line_error, at, autopeft
from tests.test_client import small_spec, start_server, wait_for
from workers.client import ServerClient
from workers.data import load_synthetic, synthetic_vocabulary
from workers.fake_worker import FakeWorker
from workers.tiny_model import write_tiny_bert

TRAINING = {"epochs": 1, "batch_size": 32, "learning_rate": 0.003, "max_length": 24,
            "max_train_examples": 300, "max_dev_examples": 100}
FULL_TRAIN_SPLIT = len(load_synthetic().train)  # 2,000; a search trial trains on 1,800


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = start_server(tmp_path_factory.mktemp("retrain-server"))
    yield running
    running.__exit__(None, None, None)


@pytest.fixture(scope="module")
def tiny_dims(tiny_bert_path: Path) -> BackboneDims:
    return BackboneDims.from_hf_config(json.loads((tiny_bert_path / "config.json").read_text()))


def tiny_spec(tiny_bert_path: Path, name: str, trials: int) -> dict[str, Any]:
    # No backbone_dims: the client reads them from the tiny model's config.json.
    return small_spec(name=name, backbone=str(tiny_bert_path), backbone_dims=None,
                      search_space={"kind": "autopeft"},
                      budget={"total_trials": trials, "initial_trials": trials,
                              "max_parallel": trials},
                      training=TRAINING)


@dataclass(frozen=True)
class _Study:
    """The completed study, its Pareto front and all its trials, as the client reads them."""

    study: StudyOut
    pareto: ParetoOut
    trials: list[TrialSummary]


@pytest.fixture(scope="module")
def study(server: ServerThread, tiny_bert_path: Path, tiny_dims: BackboneDims) -> _Study:
    """A completed 8-trial study on the tiny model (shares recorded for its dimensions)."""
    with AutopeftClient(server.base_url, CLIENT_TOKEN) as client:
        created = client.submit(tiny_spec(tiny_bert_path, "retrain", 8))
        with ServerClient(server.base_url, WORKER_TOKEN, "fake-tiny") as worker_client:
            worker = FakeWorker(worker_client, dims=tiny_dims)
            for _ in range(100):
                if client.status(created.id).state == "completed":
                    break
                worker.run_one(wait_seconds=0.3)
            else:
                raise AssertionError("the study never completed")
        return _Study(client.status(created.id), client.pareto(created.id),
                      client.trials(created.id))


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPEFT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("COLUMNS", "200")


def retrain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any], str]:
    """``autopeft retrain ARGS --json`` in this process: the JSON report and stderr."""
    assert main(["retrain", *args, "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_pareto_trials_are_retrained_with_k_seeds_on_the_full_split(
        study: _Study, server: ServerThread, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    pareto = study.pareto.trials
    assert 1 <= len(pareto) < len(study.trials)
    out = tmp_path / "retrain.json"
    report, stderr = retrain(capsys, str(study.study.id), "--seeds", "3", "--epochs",
                             "0.25", "--max-train-examples", "all", "--output", str(out),
                             *at(server))
    assert json.loads(out.read_text()) == report
    rows = report["configurations"]
    assert [row["source"]["number"] for row in rows] == [t.number for t in pareto]
    assert report["study"]["id"] == study.study.id and report["seeds"] == [0, 1, 2]
    # the study's settings, with the flags over them
    assert report["settings"]["learning_rate"] == TRAINING["learning_rate"]
    assert report["settings"]["epochs"] == 0.25
    assert report["settings"]["max_train_examples"] is None
    assert report["train_split"] == "full"
    for row, trial in zip(rows, pareto, strict=True):
        assert row["name"] == f"trial #{trial.number}"
        assert row["config_description"] == trial.config_description
        # The study's share objective: deployed parameters (its default param_share).
        assert row["deployed_percent"] == pytest.approx(trial.param_share, rel=1e-12)
        runs = row["runs"]
        assert [r["seed"] for r in runs] == [0, 1, 2]
        assert len({r["final_loss"] for r in runs}) == 3  # three different seeds
        assert all(r["train_examples"] == FULL_TRAIN_SPLIT for r in runs)
        assert all("held_out" not in r and "objective" not in r for r in runs)
        scores = [r["dev"]["accuracy"] for r in runs]
        assert row["dev_scores"] == scores
        assert row["dev_mean"] == pytest.approx(statistics.fmean(scores))
        assert row["dev_std"] == pytest.approx(statistics.stdev(scores))
    assert stderr.count("retrain: [") == 3 * len(pareto)
    assert f"[{3 * len(pareto)}/{3 * len(pareto)}]" in stderr


def test_same_seed_gives_the_same_score_and_chosen_trials(
        study: _Study, server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    off_front = [t.number for t in study.trials
                 if t.number not in {p.number for p in study.pareto.trials}]
    assert off_front, "every trial is on the front: nothing to choose off it"
    chosen = [off_front[0], study.pareto.trials[0].number]
    study_id = str(study.study.id)
    two, _ = retrain(capsys, study_id, "--trials", *map(str, chosen), str(chosen[0]),
                     "--seeds", "2", *at(server))
    one, _ = retrain(capsys, study_id, "--trials", str(chosen[0]), "--seeds", "1", *at(server))
    assert [row["source"]["number"] for row in two["configurations"]] == chosen
    first, again = two["configurations"][0]["runs"], one["configurations"][0]["runs"]
    assert again[0]["seed"] == first[0]["seed"] == 0
    for key in ("dev", "final_loss", "steps", "train_examples"):
        assert again[0][key] == first[0][key]
    assert first[1]["final_loss"] != first[0]["final_loss"]
    assert one["configurations"][0]["dev_std"] is None  # one seed: no spread


def test_baselines_beside_a_study_keep_its_settings_but_full_ft_its_rate(
        study: _Study, server: ServerThread, tiny_dims: BackboneDims,
        capsys: pytest.CaptureFixture[str]) -> None:
    number = study.pareto.trials[0].number
    report, _ = retrain(capsys, str(study.study.id), "--trials", str(number),
                        "--baselines", "head-only", "full-ft", "--seeds", "1",
                        "--learning-rate", "0.002", "--epochs", "0.1", *at(server))
    rates = {row["name"]: row["settings"]["learning_rate"] for row in report["configurations"]}
    assert rates == {f"trial #{number}": 0.002, "head-only": 0.002, "full-ft": 1e-4}
    shares = {row["name"]: row["trainable_percent"] for row in report["configurations"]}
    assert shares["head-only"] == 0.0 and shares["full-ft"] == pytest.approx(100.0)
    assert all(r["train_examples"] == TRAINING["max_train_examples"]
               for row in report["configurations"] for r in row["runs"])


def test_every_baseline_alone_without_a_server(tiny_bert_path: Path, tiny_dims: BackboneDims,
                                               tmp_path: Path) -> None:
    out = tmp_path / "baselines.json"
    done = autopeft("retrain", "--baselines", "all", "--model", str(tiny_bert_path),
                    "--task", "synthetic", "--seeds", "1", "--epochs", "0.05",
                    "--max-length", "24", "--max-dev-examples", "100", "--threads", "1",
                    "--output", str(out), "--save", str(tmp_path / "saved"),
                    env={"AUTOPEFT_CACHE_DIR": str(tmp_path / "cache")}, timeout=300)
    assert done.returncode == 0, done.stderr
    saved = sorted(p.relative_to(tmp_path / "saved").as_posix()
                   for p in (tmp_path / "saved").glob("*/seed-0/manifest.json"))
    assert saved == sorted(f"{name}/seed-0/manifest.json" for name in BASELINES)
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["configurations"]}
    assert list(rows) == list(BASELINES) and report["study"] is None
    for name, row in rows.items():
        expected = count_parameters(BASELINES[name].config(2), tiny_dims)
        assert row["trainable_parameters"] == expected.trainable
        assert row["trainable_percent"] == pytest.approx(expected.trainable_percent)
        assert row["deployed_percent"] == pytest.approx(expected.deployed_percent)
        assert row["config_description"] == BASELINES[name].config(2).describe()
        assert row["settings"]["learning_rate"] == (1e-4 if name == "full-ft" else 1e-3)
        assert [r["train_examples"] for r in row["runs"]] == [FULL_TRAIN_SPLIT]
        assert row["dev_std"] is None and row["source"] == {
            "kind": "baseline", "baseline": name, "summary": BASELINES[name].summary}
        # the table: one row per baseline with its share and its score
        line = next(li for li in done.stdout.splitlines() if f"│ {name} " in li)
        assert f"{row['deployed_percent']:.3f}" in line and f"{row['dev_mean']:.4f}" in line
    assert rows["head-only"]["trainable_percent"] == 0.0
    assert rows["full-ft"]["trainable_percent"] == pytest.approx(100.0)
    assert "dev accuracy mean ± std" in done.stdout
    assert done.stderr.count("retrain: [") == len(BASELINES)


@pytest.fixture(scope="module")
def waiting_study(server: ServerThread, tiny_bert_path: Path,
                  study: _Study) -> int:
    """A study with trials queued and none completed (no worker runs after ``study``)."""
    with AutopeftClient(server.base_url, CLIENT_TOKEN) as client:
        study_id = client.submit(tiny_spec(tiny_bert_path, "waiting", 2)).id
        wait_for(lambda: len(client.trials(study_id)) == 2, what="queued trials")
    return study_id


def test_argument_errors_are_one_line(study: _Study, waiting_study: int,
                                      server: ServerThread, tiny_bert_path: Path) -> None:
    study_id, model = str(study.study.id), str(tiny_bert_path)
    standalone = ["--task", "synthetic", "--model", model]
    cases = [
        ([], 2, "retrain: give a STUDY_ID, or --task with --model and --baselines"),
        ([study_id, "--seeds", "0", *at(server)], 2, "argument --seeds: must be a whole number"),
        ([*standalone, "--baselines", "mam", "lora"], 2,
         ("--baselines: unknown baseline 'lora'; known: lora-r8-qv, serial-adapter-64, "
          "parallel-adapter, prefix-30, mam, head-only, full-ft (or all)")),
        ([*standalone, "--baselines", "mam", "--trials", "1"], 2, "--trials: needs a STUDY_ID"),
        (["--task", "synthetic", "--baselines", "mam"], 2, "--model: required without a STUDY_ID"),
        ([*standalone], 2, "--baselines: required without a STUDY_ID"),
        ([study_id, "--task", "synthetic", *at(server)], 2, "--task: a study is re-trained"),
        ([study_id, "--trials", "99", *at(server)], 2,
         f"--trials: study {study_id} has no trial #99 (its trials are #0-#7)"),
        ([str(waiting_study), "--trials", "1", *at(server)], 2,
         f"--trials: trial #1 of study {waiting_study} is ready, not completed"),
        ([str(waiting_study), *at(server)], 2,
         f"study {waiting_study} has no completed trials, so no Pareto front"),
        (["999999", *at(server)], 1, "HTTP 404 Not Found: study 999999 does not exist"),
        ([study_id], 2, "no token: pass --token or set AUTOPEFT_TOKEN"),
        ([study_id, "--compare", *at(server)], 2, "--compare: needs --baselines"),
        ([*standalone, "--baselines", "mam", "--compare"], 2, "--compare: needs a STUDY_ID"),
        ([study_id, "--journal", "runs.jsonl", *at(server)], 2, "--journal: only with --compare"),
    ]
    for args, code, message in cases:
        assert_one_line_error(autopeft("retrain", *args), code, message)


def test_missing_or_mismatched_model_is_one_line(study: _Study, server: ServerThread,
                                                 capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    def error(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_:
            main(["retrain", *args])
        assert exit_.value.code == 2
        return capsys.readouterr().err

    study_id, missing = str(study.study.id), tmp_path / "nope"
    for args in (["--task", "synthetic", "--baselines", "mam"], [study_id, *at(server)]):
        assert error(*args, "--model", str(missing)) == (
            f"autopeft: error: model: {missing} is not a model folder (no config.json)\n")
    three = write_tiny_bert(tmp_path / "three-layers", synthetic_vocabulary(), num_layers=3)
    number = study.pareto.trials[0].number
    assert error(study_id, "--trials", str(number), "--model", str(three), *at(server)) == (
        f"autopeft: error: trial #{number} is configured for 2 layers but {three} has 3; "
        "pass the study's backbone with --model\n")


def test_compare_pairs_the_trials_with_the_baselines(
        study: _Study, server: ServerThread, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    """``--compare``: seed k trains every arm on data seed k's subset, each trial is compared
    with each baseline, and a rerun with the journal trains nothing."""
    first = study.pareto.trials[0].number
    journal = tmp_path / "runs.jsonl"
    args = [str(study.study.id), "--trials", str(first), "--compare", "--baselines",
            "head-only", "lora-r8-qv", "--seeds", "2", "--epochs", "0.25",
            "--max-train-examples", "120", "--journal", str(journal), *at(server)]
    report, stderr = retrain(capsys, *args)
    assert report["complete"] and report["seeds"] == [0, 1]
    assert [(c["candidate"], c["baseline"]) for c in report["comparisons"]] == [
        (f"trial #{first}", "head-only"), (f"trial #{first}", "lora-r8-qv")]
    arms = {a["name"]: a for a in report["arms"]}
    for seed in ("0", "1"):
        assert len({a["train_fingerprints"][seed] for a in arms.values()}) == 1
    assert arms["head-only"]["train_fingerprints"]["0"] != arms["head-only"]["train_fingerprints"]["1"]
    assert arms["lora-r8-qv"]["settings"]["learning_rate"] == TRAINING["learning_rate"]
    assert stderr.count("compare: [") == 6
    again, stderr = retrain(capsys, *args)
    assert stderr.count("from the journal") == 6
    assert again["comparisons"] == report["comparisons"]


def _answer(status: str | None, note: str | None = None) -> Any:
    return ParetoOut(study_id=1, hypervolume=0.0, front="model" if status else "observed",
                     reference_point={"score": 0.0, "param_share": 10.0}, trials=[],
                     note=note, model_status=status)


class _Answers:
    """The server's successive answers to ``pareto`` (the polling rule under test, not the
    server: the server's statuses are tested in tests/api/test_model_front_cache.py)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    def pareto(self, study: int, front: str = "observed") -> Any:
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_retrain_waits_for_a_model_front_fitted_on_every_observation() -> None:
    from workers.commands.retrain import _front

    client = _Answers(_answer("fitting", "being fitted"), _answer("refitting", "3 of 4"),
                      _answer("fresh"))
    assert _front(client, 1, "model", poll_seconds=0).model_status == "fresh"  # type: ignore[arg-type]
    assert client.calls == 3
    for status in ("failed", "unavailable"):
        with pytest.raises(ConfigError, match="no model front to retrain: why"):
            _front(_Answers(_answer(status, "why")), 1, "model", poll_seconds=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not fitted on every observation within 0 s"):
        _front(_Answers(_answer("refitting", "3 of 4")), 1, "model", wait_seconds=0,  # type: ignore[arg-type]
               poll_seconds=0)
    observed = _Answers(_answer(None))
    assert _front(observed, 1, "observed").front == "observed" and observed.calls == 1  # type: ignore[arg-type]
