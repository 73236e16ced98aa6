"""``autopeft trial`` end to end in a subprocess: JSON out, progress on stderr, one-line
errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autopeft_service.cli.main import build_parser
from autopeft_service.domain import PeftConfig, TrainingSettings
from workers.commands.trial import SETTING_FLAGS, settings_from_args
from workers.progress import Phase

#: Every progress line of ``autopeft trial`` on a non-terminal stderr starts with this.
PROGRESS = "trial: "


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
    result = json.loads(done.stdout)  # stdout is the JSON result alone
    assert result["seed"] == 3 and result["metric"] == "accuracy"
    # stderr is no terminal here: plain progress lines, a start line per phase, in order
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith(PROGRESS) for line in lines), done.stderr
    started = [line.removeprefix(PROGRESS).split(" (")[0] for line in lines]
    assert [s for s in started if s in {p.value for p in Phase}] == [p.value for p in Phase]
    assert f"training ({result['steps']} steps)" in done.stderr
    assert lines[-1].startswith(f"{PROGRESS}done in ")
    assert "\x1b" not in done.stderr and "\r" not in done.stderr  # nothing animated
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
    assert done.returncode == 2 and done.stdout == ""
    # one line, said before any work starts (so before any progress line)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autopeft: error: "), done.stderr
    assert message in lines[0], done.stderr


def test_quiet_prints_the_json_and_nothing_on_stderr(tiny_bert_path: Path,
                                                    config_file: Path) -> None:
    done = autopeft("trial", "--model", str(tiny_bert_path), "--task", "synthetic",
                    "--config", str(config_file), "--epochs", "0.1", "--max-length", "16",
                    "--max-train-examples", "64", "--max-held-out-examples", "20",
                    "--max-dev-examples", "20", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["train_examples"] == 64


def test_help_documents_every_setting_flag_and_the_scoring_caps(
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["trial", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    defaults = TrainingSettings()
    entries = {name: _help_entry(text, name, metavar)
               for name, (_, metavar, _) in SETTING_FLAGS.items()}
    assert set(SETTING_FLAGS) <= set(TrainingSettings.model_fields)
    held_out, dev = entries["max_held_out_examples"], entries["max_dev_examples"]
    assert held_out.startswith("score at most N held-out examples")
    assert held_out.endswith(f"(default: {defaults.max_held_out_examples})")
    assert dev.startswith("score at most N dev examples")
    assert defaults.max_dev_examples is None and dev.endswith("(default: no cap)")
    assert all("(default: " in entry for entry in entries.values()), entries
    assert _help_entry(text, "quiet", "").startswith("no progress on stderr")


def _help_entry(text: str, name: str, metavar: str) -> str:
    """The help of flag ``name`` in whitespace-normalised ``--help`` text ('' if none)."""
    flag = f"--{name.replace('_', '-')} {metavar} ".replace("  ", " ")
    found = re.search(re.escape(flag) + r"(.*?)(?= --|$)", text)
    assert found, f"{flag!r} not in --help"
    return found.group(1)


def test_setting_flags_reach_the_settings() -> None:
    args = build_parser().parse_args(["trial", "--model", "m", "--config", "c.json",
                                      "--max-held-out-examples", "7",
                                      "--max-dev-examples", "9"])
    settings = settings_from_args(args)
    assert settings.max_held_out_examples == 7 and settings.max_dev_examples == 9


def test_missing_required_argument_is_one_line() -> None:
    done = autopeft("trial", "--task", "synthetic")
    assert done.returncode == 2
    assert done.stderr.strip() == ("autopeft: error: trial: the following arguments are "
                                   "required: --model, --config")
