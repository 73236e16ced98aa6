"""``autopeft demo``: its study on every search-space family, and a whole run on one."""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from autopeft_service.client import AutopeftClient, backbone_dims_of
from autopeft_service.domain.spaces import FAMILIES
from autopeft_service.domain.study import StudySpec, check_new_study
from autopeft_service.domain.views import StudyOut
from autopeft_service.local import DemoFolder
from tests.cli.test_studies import ROOT, autopeft
from workers.commands.demo import demo_spec


def _args(space: str, **overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "space": space, "task": "synthetic", "data_dir": None, "text_columns": None,
        "label_column": None, "task_type": None, "trials": 4, "initial_trials": 2,
        "workers": 1, "optimizer": "sobol", "epochs": 0.25, "learning_rate": 3e-3,
        "max_train_examples": 64, "max_length": 24, "batch_size": None, "seed": 0}
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.mark.parametrize("space", sorted(FAMILIES))
def test_the_demo_study_is_the_family_default_on_the_model(tiny_bert_path: Path,
                                                           space: str) -> None:
    spec = StudySpec.model_validate(demo_spec(_args(space), str(tiny_bert_path)))
    check_new_study(spec)
    assert spec.space.kind == space
    assert spec.backbone_dims == backbone_dims_of(tiny_bert_path)


@pytest.mark.parametrize("backbone", ["bert", "llama"])
def test_demo_runs_a_search_on_another_family(backbone: str, tiny_bert_path: Path,
                                              tmp_path: Path) -> None:
    """The lora family end to end through the server and a worker, on a tiny encoder and on
    a tiny decoder."""
    from workers.data import synthetic_vocabulary
    from workers.tiny_model import write_tiny_decoder

    model = tiny_bert_path if backbone == "bert" else write_tiny_decoder(
        tmp_path / "llama", synthetic_vocabulary(), model_type="llama")
    done = autopeft("demo", "--space", "lora", "--model", str(model), "--trials", "3",
                    "--initial-trials", "3", "--workers", "1", "--optimizer", "sobol",
                    "--epochs", "0.25", "--max-train-examples", "64", "--max-length", "24",
                    "--workdir", str(tmp_path), env={"AUTOPEFT_CACHE_DIR": str(tmp_path / "c")},
                    timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "3 trials completed" in done.stdout
    assert "lora[" in done.stdout  # the Pareto table names LoRA configurations
    # the dashboard's URL and the client token, printed once the server is up, are those
    # the demo saved for `serve --demo`
    url, token = dashboard_of(done.stdout)
    demo = DemoFolder.find(tmp_path)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/ui", url) and token == demo.tokens()[0]
    assert f"autopeft serve --demo {demo.path}" in done.stdout


def dashboard_of(output: str) -> tuple[str, str]:
    """The (URL, client token) of the demo's ``dashboard: URL (client token T)`` line."""
    match = re.search(r"^dashboard: (\S+) \(client token (\S+)\)$", output, re.MULTILINE)
    assert match, output
    return match.group(1), match.group(2)


SMOLLM2_CONFIG = {  # SmolLM2-135M-Instruct's config.json as workers.models converts it
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "head_dim": 64, "vocab_size": 49152, "attention_bias": False, "mlp_bias": False,
    "tie_word_embeddings": True}


def test_the_smollm2_demo_searches_all_seven_projections_at_its_fidelity(
        tmp_path: Path) -> None:
    import json

    from autopeft_service.domain.backbone import SMOLLM2_DIMS

    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
    args = _args("lora", max_train_examples=None, max_length=None, batch_size=None)
    spec = StudySpec.model_validate(demo_spec(args, "smollm2", tmp_path))
    check_new_study(spec)
    assert spec.backbone_dims == SMOLLM2_DIMS  # the packaged table equals the config's count
    assert len(spec.space.targets) == 7
    assert (spec.training.max_train_examples, spec.training.batch_size,
            spec.training.max_length) == (512, 16, 48)
    # a spec naming the packaged model needs no dimensions
    bare = StudySpec.model_validate({"name": "x", "backbone": "SmolLM2", "task": "synthetic",
                                     "search_space": {"kind": "lora"}})
    check_new_study(bare)
    assert bare.backbone_dims == SMOLLM2_DIMS and bare.space.num_layers == 30


class Lines:
    """A child process's stdout read line by line on a thread, with deadlines."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str, timeout: float) -> re.Match[str]:
        """Read until a line matches ``pattern``; fails at the end of output or timeout."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"no line matching {pattern!r}; output:\n" + "\n".join(self.seen))
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def rest(self, timeout: float = 60) -> str:
        """Everything printed from here to the end of output (fails, with what was
        printed, when the output has not ended within ``timeout`` seconds)."""
        lines = []
        end = time.monotonic() + timeout
        try:
            while (line := self._queue.get(
                    timeout=max(0.01, end - time.monotonic()))) is not None:
                lines.append(line)
        except queue.Empty:
            pytest.fail(f"the output did not end within {timeout:g} s; it printed:\n"
                        + "\n".join([*self.seen, *lines]))
        self.seen += lines
        return "\n".join(lines)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def spawn(*args: str) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """``autopeft ARGS`` as a child process (output and errors read by ``Lines``), killed
    at the end if still running."""
    env = {**os.environ, "COLUMNS": "200"}
    for name in ("AUTOPEFT_SERVER", "AUTOPEFT_TOKEN", "AUTOPEFT_DATABASE_URL",
                 "AUTOPEFT_CLIENT_TOKENS", "AUTOPEFT_WORKER_TOKENS", "AUTOPEFT_ARTIFACT_DIR"):
        env.pop(name, None)
    # Ctrl-C must reach the demo even when this suite runs in a background job (a shell
    # without job control starts those with SIGINT ignored, and children inherit that)
    process = subprocess.Popen([sys.executable, "-m", "autopeft_service.cli", *args],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               preexec_fn=_default_sigint)  # noqa: PLW1509 - signal only
    try:
        yield process, Lines(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def _studies(url: str, token: str) -> list[StudyOut]:
    with AutopeftClient(url, token) as client:
        return client.list_studies()


def test_a_finished_demo_keeps_serving_and_serves_again(tiny_bert_path: Path,
                                                        tmp_path: Path) -> None:
    """``--keep-serving``: the dashboard and API stay up after the search until Ctrl-C;
    ``serve --demo`` then serves the same studies, adapters and token again."""
    with spawn("demo", "--space", "lora", "--model", str(tiny_bert_path), "--trials", "2",
               "--initial-trials", "2", "--workers", "1", "--optimizer", "sobol",
               "--epochs", "0.25", "--max-train-examples", "64", "--max-length", "24",
               "--workdir", str(tmp_path), "--keep-serving") as (demo, lines):
        url, token = lines.until(r"^dashboard: (\S+) \(client token (\S+)\)$",
                                 timeout=60).groups()
        lines.until(r"^demo finished in .*: 2 trials completed", timeout=240)
        again = lines.until(r"^serving the results until Ctrl-C: dashboard (\S+) "
                            r"\(client token (\S+)\)$", timeout=60)
        assert again.groups() == (url, token)
        base = url.removesuffix("/ui")
        assert httpx.get(url, follow_redirects=True).status_code == 200  # the dashboard
        (study,) = _studies(base, token)  # still served after the search
        assert study.state == "completed"
        time.sleep(1.0)
        assert demo.poll() is None  # ... and still up
        demo.send_signal(signal.SIGINT)
        rest = lines.rest()
        assert demo.wait(30) == 0, rest
    assert "stopped serving" in rest and "Traceback" not in rest
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/v1/health", timeout=2)

    # served again from the folder of demos (the newest), with the same client token
    with spawn("serve", "--demo", str(tmp_path), "--port", "0") as (serve, lines):
        address, served_token = lines.until(
            r"^autopeft serve: listening on (\S+), dashboard .*, client token (\S+)$",
            timeout=60).groups()
        assert served_token == token
        served = f"http://{address}"
        assert [s.id for s in _studies(served, token)] == [study.id]
        with AutopeftClient(served, token) as client:
            trial = next(t for t in client.trials(study.id) if t.state == "completed")
            manifest = client.download_artifact(study.id, trial.number,
                                                tmp_path / "adapter")
        assert manifest.peft_config.describe() == trial.config_description
