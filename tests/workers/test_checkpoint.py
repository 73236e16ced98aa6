"""Freeze-thaw continuation: a trial trained to a fidelity, checkpointed, and resumed (in
another runner, as another worker would) ends exactly where one uninterrupted run ends."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import get_linear_schedule_with_warmup

from autopeft_service.domain import PeftConfig, TrainingSettings
from autopeft_service.domain.early_stopping import EarlyStopping
from autopeft_service.domain.errors import ConfigError
from autopeft_service.domain.trial import TrialResult
from workers.checkpoint import (
    MANIFEST_FILE,
    STATE_FILE,
    CheckpointError,
    load_checkpoint,
    pack_checkpoint,
    read_manifest,
    unpack_checkpoint,
)
from workers.data import TokenizedCache
from workers.trial import TrialProgress, TrialRequest, TrialRunner, stop_step, training_steps

# 300 examples in batches of 32: 10 batches per epoch; 1.5 epochs: 15 steps. Fidelity 1/3
# stops mid-epoch (step 5), 2/3 at the end of the first epoch (step 10). Dropout is on in
# the head (0.1) and in the tiny BERT itself (hidden and attention dropout 0.1); 3 warm-up
# steps.
SETTINGS = TrainingSettings(epochs=1.5, batch_size=32, learning_rate=3e-3, max_length=24,
                            max_train_examples=300, max_held_out_examples=100,
                            max_dev_examples=100, warmup_ratio=0.2, head_dropout=0.1)
TOTAL = 15
CONFIG = PeftConfig.from_dict({"num_layers": 2, "serial_adapters": [{"sizes": [16, 16]}],
                               "lora": {"ranks": [4, 4]}})
# rung steps on the full budget: ceil(0.2 * 15) = 3, ceil(0.5 * 15) = 8
RUNGS = EarlyStopping(rule="none", rungs=(0.2, 0.5), rung_examples=50)
SEED = 3


def _request(model: Path, fidelity: float = 1.0, resume_from: Path | None = None,
             seed: int = SEED, config: PeftConfig = CONFIG, **settings: object) -> TrialRequest:
    return TrialRequest(model=model, task="synthetic", config=config, seed=seed,
                        settings=SETTINGS.model_copy(update=settings), fidelity=fidelity,
                        resume_from=resume_from)


def _worker(root: Path, name: str) -> TrialRunner:
    """A fresh runner with its own data cache, as a separate worker has."""
    return TrialRunner(cache=TokenizedCache(root / f"cache-{name}"))


@dataclass
class Runs:
    root: Path
    full: TrialResult
    third: TrialResult
    resumed: TrialResult
    two_thirds: TrialResult
    two_hop: TrialResult
    unpacked: TrialResult


@pytest.fixture(scope="module")
def runs(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("freeze-thaw")

    def run(name: str, fidelity: float, resume_from: Path | None = None) -> TrialResult:
        return _worker(root, name).run(_request(tiny_bert_path, fidelity, resume_from),
                                       checkpoint_dir=root / name, early_stopping=RUNGS)

    full = run("full", 1.0)
    third = run("third", 1 / 3)
    resumed = run("resumed", 1.0, root / "third")
    two_thirds = run("two_thirds", 2 / 3, root / "third")
    two_hop = run("two_hop", 1.0, root / "two_thirds")
    unpack_checkpoint(pack_checkpoint(root / "third"), root / "travelled")
    unpacked = run("unpacked", 1.0, root / "travelled")
    return Runs(root, full, third, resumed, two_thirds, two_hop, unpacked)


def _max_difference(first: Path, second: Path) -> float:
    """Largest absolute difference between the trainable tensors of two checkpoints."""
    a = load_checkpoint(first).state.parameters
    b = load_checkpoint(second).state.parameters
    assert list(a) == list(b)
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def test_dropout_is_on_in_the_backbone(tiny_bert_path: Path, tmp_path: Path) -> None:
    """The equivalence below is only meaningful with random draws during training."""
    config = _worker(tmp_path, "x").backbone(tiny_bert_path).model.config
    assert config.hidden_dropout_prob > 0 and config.attention_probs_dropout_prob > 0


def test_resume_equals_one_uninterrupted_run(runs: Runs) -> None:
    names = load_checkpoint(runs.root / "full").manifest.parameters
    assert any(".head." in f".{n}" for n in names) and any("lora" in n for n in names)
    assert any(".serial." in n for n in names)  # the serial adapters
    difference = _max_difference(runs.root / "full", runs.root / "resumed")
    print(f"max abs difference, resumed 1/3 -> 1 vs uninterrupted: {difference:.3g}")
    assert difference <= 1e-6
    assert runs.resumed.dev_score == runs.full.dev_score
    assert runs.resumed.objective == runs.full.objective
    assert runs.resumed.final_loss == pytest.approx(runs.full.final_loss, abs=1e-6)
    assert (runs.third.start_step, runs.third.steps) == (0, 5)
    assert (runs.resumed.start_step, runs.resumed.steps) == (5, TOTAL)
    assert (runs.full.start_step, runs.full.steps) == (0, TOTAL)
    assert runs.third.fidelity == pytest.approx(1 / 3) and runs.resumed.fidelity == 1.0
    # the optimiser's moments went on as well
    full = load_checkpoint(runs.root / "full").state.optimizer["state"]
    resumed = load_checkpoint(runs.root / "resumed").state.optimizer["state"]
    assert all(torch.equal(full[i]["exp_avg_sq"], resumed[i]["exp_avg_sq"]) for i in full)


def test_two_hop_resume_and_a_resume_after_travel_equal_it(runs: Runs) -> None:
    assert (runs.two_thirds.start_step, runs.two_thirds.steps) == (5, 10)  # an epoch's end
    assert (runs.two_hop.start_step, runs.two_hop.steps) == (10, TOTAL)
    assert (runs.unpacked.start_step, runs.unpacked.steps) == (5, TOTAL)
    assert _max_difference(runs.root / "full", runs.root / "two_hop") <= 1e-6
    assert _max_difference(runs.root / "full", runs.root / "unpacked") <= 1e-6
    assert runs.two_hop.dev_score == runs.unpacked.dev_score == runs.full.dev_score
    manifest = read_manifest(runs.root / "two_hop")
    assert (manifest.step, manifest.total_steps, manifest.fidelity) == (TOTAL, TOTAL, 1.0)
    assert manifest.examples_seen == read_manifest(runs.root / "full").examples_seen == 300 + 5 * 32


def test_rungs_stay_on_the_full_budget_and_are_not_scored_again(runs: Runs) -> None:
    assert [(r.rung, r.step) for r in runs.full.rungs] == [(0, 3), (1, 8)]
    assert [(r.rung, r.step) for r in runs.third.rungs] == [(0, 3)]
    assert [(r.rung, r.step) for r in runs.resumed.rungs] == [(1, 8)]
    assert [(r.rung, r.step) for r in runs.two_hop.rungs] == []
    assert runs.resumed.rungs[0].score == runs.full.rungs[1].score
    assert runs.third.rungs[0].score == runs.full.rungs[0].score


def test_fidelity_stops_at_its_step_on_the_full_schedule(runs: Runs,
                                                         tiny_bert_path: Path) -> None:
    assert training_steps(300, SETTINGS) == TOTAL and stop_step(1 / 3, TOTAL) == 5
    assert stop_step(0.01, TOTAL) == 1 and stop_step(1.0, TOTAL) == TOTAL
    scheduler = load_checkpoint(runs.root / "third").state.scheduler
    # the full schedule, stepped 5 times: 3 warm-up steps of 15, then linear decay
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    full = get_linear_schedule_with_warmup(optimizer, 3, TOTAL)
    for _ in range(5):
        optimizer.step()
        full.step()
    assert scheduler["last_epoch"] == 5
    assert scheduler["_last_lr"] == pytest.approx(full.get_last_lr(), rel=1e-12)
    assert scheduler["_last_lr"][0] == pytest.approx(3e-3 * (TOTAL - 5) / (TOTAL - 3))
    assert runs.third.steps == 5 and runs.third.train_examples == 300


def test_progress_counts_to_the_stop_step(tiny_bert_path: Path, tmp_path: Path) -> None:
    seen: list[TrialProgress] = []

    def record(progress: TrialProgress) -> bool:
        seen.append(progress)
        return True

    result = _worker(tmp_path, "p").run(_request(tiny_bert_path, 0.2), progress=record,
                                        progress_every=1)
    assert result.steps == 3 and [(p.step, p.total_steps) for p in seen] == [
        (1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("fidelity", [0, -0.5, 1.01, float("nan"), float("inf"), True, "1"])
def test_a_fidelity_outside_the_budget_is_refused(tiny_bert_path: Path,
                                                  fidelity: object) -> None:
    with pytest.raises(ConfigError, match="fidelity"):
        _request(tiny_bert_path, fidelity)  # type: ignore[arg-type]


def test_a_result_without_the_new_fields_still_parses(runs: Runs) -> None:
    record = runs.full.model_dump()
    del record["fidelity"], record["start_step"]
    old = TrialResult.model_validate(record)
    assert old.fidelity == 1.0 and old.start_step == 0
    with pytest.raises(ValueError, match="start_step"):
        TrialResult.model_validate({**record, "start_step": TOTAL + 1})


@pytest.mark.parametrize(("change", "named"), [
    ({"seed": SEED + 1}, "seed: checkpoint 3, this trial 4"),
    ({"config": PeftConfig.from_dict({"num_layers": 2, "serial_adapters": [{"sizes": [16, 16]}],
                                      "lora": {"ranks": [8, 8]}})}, r"config\.lora"),
    ({"learning_rate": 1e-3}, r"settings\.learning_rate: checkpoint 0\.003, this trial 0\.001"),
    ({"fidelity": 1 / 3}, "checkpoint is at step 5"),
    ({"fidelity": 0.3}, "checkpoint is at step 5 .*stops at step 4"),
])
def test_a_checkpoint_of_another_run_is_refused(runs: Runs, tiny_bert_path: Path,
                                                tmp_path: Path, change: dict[str, object],
                                                named: str) -> None:
    arguments: dict[str, object] = {"fidelity": 1.0, **change}
    request = _request(tiny_bert_path, resume_from=runs.root / "third",
                       **arguments)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=named):
        _worker(tmp_path, "r").run(request)


def test_a_damaged_or_missing_checkpoint_is_refused(runs: Runs, tiny_bert_path: Path,
                                                    tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    unpack_checkpoint(pack_checkpoint(runs.root / "third"), damaged)
    data = bytearray((damaged / STATE_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / STATE_FILE).write_bytes(bytes(data))
    runner = _worker(tmp_path, "d")
    with pytest.raises(CheckpointError, match="SHA-256 .* differs from the manifest"):
        runner.run(_request(tiny_bert_path, resume_from=damaged))
    with pytest.raises(ConfigError, match="resume_from: .* not a checkpoint folder"):
        runner.run(_request(tiny_bert_path, resume_from=tmp_path / "nowhere"))
    (damaged / STATE_FILE).unlink()
    with pytest.raises(ConfigError, match="missing"):
        runner.run(_request(tiny_bert_path, resume_from=damaged))


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_unpack_refuses_unsafe_or_foreign_archives(runs: Runs, tmp_path: Path) -> None:
    manifest = (runs.root / "third" / MANIFEST_FILE).read_bytes()
    state = (runs.root / "third" / STATE_FILE).read_bytes()
    target = tmp_path / "target"
    climbing = _tar((tarfile.TarInfo(MANIFEST_FILE), manifest), (tarfile.TarInfo("../x"), b"x"))
    with pytest.raises(CheckpointError, match=r"'\.\./x'.*'\.\.' is refused"):
        unpack_checkpoint(climbing, target)
    absolute = _tar((tarfile.TarInfo("/tmp/x"), b"x"))
    with pytest.raises(CheckpointError, match="absolute path"):
        unpack_checkpoint(absolute, target)
    link = tarfile.TarInfo(STATE_FILE)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(CheckpointError, match="only plain files"):
        unpack_checkpoint(_tar((tarfile.TarInfo(MANIFEST_FILE), manifest), (link, b"")), target)
    with pytest.raises(CheckpointError, match="unexpected"):
        unpack_checkpoint(_tar((tarfile.TarInfo("extra.txt"), b"x")), target)
    with pytest.raises(CheckpointError, match="not a tar"):
        unpack_checkpoint(b"not a tar at all" * 64, target)
    damaged = bytearray(state)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(CheckpointError, match="SHA-256"):
        unpack_checkpoint(_tar((tarfile.TarInfo(MANIFEST_FILE), manifest),
                               (tarfile.TarInfo(STATE_FILE), bytes(damaged))), target)
    assert not target.exists() and not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging folder left behind
    unpack_checkpoint(_tar((tarfile.TarInfo(MANIFEST_FILE), manifest),
                           (tarfile.TarInfo(STATE_FILE), state)), target)
    assert read_manifest(target).step == 5
