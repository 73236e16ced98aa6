"""``autopeft trial`` end to end in a subprocess: JSON out, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autopeft_service.domain import PeftConfig


def autopeft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autopeft_service.cli", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"num_layers": 2, "parallel_adapters": [{"sizes": [8, 8]}]}))
    return path


def test_trial_prints_the_result_as_json(tiny_bert_path: Path, config_file: Path,
                                         tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    done = autopeft("trial", "--model", str(tiny_bert_path), "--task", "synthetic",
                    "--config", str(config_file), "--epochs", "0.2", "--max-length", "24",
                    "--max-train-examples", "200", "--seed", "3", "--output", str(out),
                    "--save", str(tmp_path / "artifact"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["seed"] == 3 and result["metric"] == "accuracy"
    assert result["trainable_parameters"] == 2 * (2 * 32 * 8 + 8 + 32)
    assert json.loads(out.read_text()) == result
    manifest = json.loads((tmp_path / "artifact" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["metrics"]["dev_score"] == result["dev_score"]
    assert PeftConfig.model_validate(manifest["peft_config"]) == PeftConfig.from_dict(
        json.loads(config_file.read_text()))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "missing.json"], "--config: file not found: missing.json"),
        (["--config", "{bad}"], None),
        (["--epochs", "many"], "argument --epochs: invalid float value: 'many'"),
        (["--epochs", "-1"], "epochs: Input should be greater than 0"),
        (["--task", "glue:nope", "--data-dir", "."], "nope"),
        (["--model", "/nonexistent/model"], "model: /nonexistent/model is not a model folder"),
    ],
)
def test_bad_arguments_give_one_clear_line(tiny_bert_path: Path, config_file: Path,
                                           tmp_path: Path, args: list[str],
                                           message: str | None) -> None:
    base = {"--model": str(tiny_bert_path), "--config": str(config_file), "--task": "synthetic"}
    if args[0] == "--config" and args[1] == "{bad}":
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"num_layers": 2, "lora": {"ranks": [1]}}))
        args, message = ["--config", str(bad)], "lora.0.ranks: has 1 entries"
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    done = autopeft("trial", *[x for pair in base.items() for x in pair])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autopeft: error: "), done.stderr
    assert message in lines[0]


def test_missing_required_argument_is_one_line() -> None:
    done = autopeft("trial", "--task", "synthetic")
    assert done.returncode == 2
    assert done.stderr.strip() == ("autopeft: error: trial: the following arguments are "
                                   "required: --model, --config")
