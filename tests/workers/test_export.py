"""Export to HuggingFace peft (workers/export.py): peft's ``PeftModel.from_pretrained`` on
the exported folder gives this engine's logits for LoRA with per-layer ranks, (IA)^3 and
prefix tuning; every configuration peft cannot express is refused naming the part."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import workers.models
from autopeft_service.cli.main import main as cli_main
from autopeft_service.domain import PeftConfig, TrainingSettings
from autopeft_service.domain.methods import METHODS, NO_PEFT_FORM, PeftForm, export_method, registered
from tests.domain.test_method_registry import dummy_method, with_dummy
from workers.artifact import load_classifier
from workers.data import TokenizedCache
from workers.export import CONVERTERS, ExportRefused, export_peft, load_peft_export, refusal
from workers.peft.registry import injectors
from workers.trial import TrialRequest, TrialRunner

SETTINGS = TrainingSettings(epochs=1, batch_size=16, learning_rate=1e-2, max_length=24,
                            max_train_examples=160, max_held_out_examples=32,
                            max_dev_examples=48, warmup_ratio=0.0)
EXPORTABLE = {
    # per-layer ranks (layer 1 without), two LoRA modules on different projections, and
    # a per-rank scale: rank_pattern and alpha_pattern must carry all of it
    "lora": {"num_layers": 2, "lora": [
        {"ranks": [4, 0], "targets": ["query", "value"], "alpha": 8},
        {"ranks": [2, 6], "targets": ["ffn_out"], "alpha_per_rank": 3.0}]},
    "ia3": {"num_layers": 2, "ia3": {"layers": [True, False]}},
    "prefix": {"num_layers": 2, "prefix": {"lengths": [3, 3]}},
}


#: Sentences and sentence pairs of the synthetic task's vocabulary.
TEXTS: list[str | tuple[str, str]] = ["a b c d e f g", "b", "c d e",
                                      "f g a b c d e f g a b c d e f"]
PAIRS: list[str | tuple[str, str]] = [("a b c", "d e"), ("f", "g a b c d e f g")]


def _artifact(tmp_path: Path, model: Path | str, config: dict) -> Path:
    runner = TrialRunner(cache=TokenizedCache(tmp_path / "cache"))
    request = TrialRequest(model=model, task="synthetic", config=PeftConfig.from_dict(config),
                           settings=SETTINGS, seed=1)
    artifact = tmp_path / "artifact"
    runner.run(request, artifact_dir=artifact)
    return artifact


@pytest.mark.parametrize("name", sorted(EXPORTABLE))
def test_peft_loads_the_export_and_gives_this_engines_logits(name, tmp_path,
                                                             tiny_bert_path) -> None:
    artifact = _artifact(tmp_path, tiny_bert_path, EXPORTABLE[name])
    out = tmp_path / "peft"
    files = export_peft(artifact, out)
    assert {"adapter_config.json", "adapter_model.safetensors", "autopeft_head.json",
            "autopeft_head.safetensors"} <= set(files)
    classifier = load_classifier(tiny_bert_path, artifact)
    texts = TEXTS
    batch = classifier.tokenize(texts).batch(torch.arange(len(texts)))
    batch.pop("labels")
    with torch.no_grad():
        ours = classifier.model(**batch)
    exported = load_peft_export(tiny_bert_path, out)
    theirs = exported.logits_from_ids(batch["input_ids"], batch["attention_mask"],
                                      batch.get("token_type_ids"))
    assert (ours - theirs).abs().max().item() <= 1e-5
    # sentences, and pairs (second segment's token types), tokenised by the export itself
    for sentences in (TEXTS, PAIRS):
        expected = classifier.logits(sentences)
        assert expected.shape == (len(sentences), 2)
        assert (exported.logits(sentences) - expected).abs().max().item() <= 1e-5
    # the adapter is not a no-op: the backbone alone, with the same head, differs
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(tiny_bert_path)(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        plain = exported.head((hidden * mask).sum(1) / mask.sum(1))
    assert (ours - plain).abs().max().item() > 1e-4
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_bert_path)
    # the form written is the one the method's descriptor declares
    assert config["peft_type"] == export_method(PeftConfig.from_dict(EXPORTABLE[name]))[1].peft_type
    if name == "lora":
        assert config["rank_pattern"] == {r"encoder\.layer\.0\.attention\.self\.query": 4,
                                          r"encoder\.layer\.0\.attention\.self\.value": 4,
                                          r"encoder\.layer\.0\.output\.dense": 2,
                                          r"encoder\.layer\.1\.output\.dense": 6}
        assert config["alpha_pattern"][r"encoder\.layer\.1\.output\.dense"] == 18.0


@pytest.mark.parametrize("config, part", [
    ({"num_layers": 2, "serial_adapters": [{"sizes": [4, 4]}]}, "serial adapters: bottleneck"),
    ({"num_layers": 2, "parallel_adapters": [{"sizes": [4, 0]}]}, "parallel adapters"),
    ({"num_layers": 2, "lora": {"ranks": [2, 2]}, "prefix": {"lengths": [2, 2]}},
     "a mixture (LoRA + prefix)"),
    ({"num_layers": 2, "prefix": {"lengths": [2, 5]}}, "prefix: per-layer lengths [2, 5]"),
    ({"num_layers": 2, "prefix": {"lengths": [2, 0]}}, "prefix: per-layer lengths [2, 0]"),
    ({"num_layers": 2, "bitfit": {"layers": [True, False]}}, "BitFit"),
    ({"num_layers": 2, "full_finetuning": True}, "full fine-tuning"),
    ({"num_layers": 2}, "no PEFT module (head only)"),
])
def test_what_peft_cannot_express_is_refused_naming_the_part(config, part) -> None:
    reason = refusal(PeftConfig.from_dict(config))
    assert reason is not None and reason.startswith(part)


def test_a_new_method_mixed_with_lora_is_refused_by_name_never_dropped() -> None:
    """A method whose descriptor declares no peft form is refused naming it, with LoRA or
    alone; one that declares a form this module cannot write is refused naming it too."""
    lora = {"lora": [{"ranks": [2, 2]}]}
    with registered(dummy_method()):
        assert refusal(with_dummy(lora, layers=2)) == f"Dummy: {NO_PEFT_FORM}"
        assert refusal(with_dummy({}, layers=2)) == f"Dummy: {NO_PEFT_FORM}"
    with registered(dummy_method(export=PeftForm("DUMMY"))):
        assert refusal(with_dummy(lora, layers=2)).startswith("a mixture (Dummy + LoRA)")
        reason = refusal(with_dummy({}, layers=2))
        assert reason is not None and reason.startswith("Dummy: its peft form DUMMY has no "
                                                        "converter")


def test_every_declared_peft_form_has_a_converter_and_every_converter_a_method() -> None:
    forms = {m.export.peft_type for m in METHODS if isinstance(m.export, PeftForm)}
    assert forms == set(CONVERTERS)


def test_a_registered_method_without_an_injector_stops_the_build() -> None:
    with registered(dummy_method()), pytest.raises(RuntimeError, match="PeftConfig.dummy"):
        injectors()
    assert {i.field for i in injectors()} == {m.field for m in METHODS}


def test_the_cli_exports_or_refuses_in_one_line_with_exit_2(tmp_path, tiny_bert_path,
                                                            capsys) -> None:
    artifact = _artifact(tmp_path, tiny_bert_path, EXPORTABLE["ia3"])
    out = tmp_path / "exported"
    assert cli_main(["export", str(artifact), "--format", "peft", "-o", str(out)]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert "peft adapter" in capsys.readouterr().out

    mixed = _artifact(tmp_path / "mixed", tiny_bert_path, {
        "num_layers": 2, "serial_adapters": [{"sizes": [4, 4]}]})
    capsys.readouterr()  # the training's progress output
    with pytest.raises(SystemExit) as exit_:
        cli_main(["export", str(mixed), "--format", "peft", "-o", str(tmp_path / "no")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "serial adapters: bottleneck adapters have no peft form" in err[0]
    assert not (tmp_path / "no").exists()
    with pytest.raises(SystemExit) as exit_:
        cli_main(["export", str(tmp_path / "missing"), "--format", "peft", "-o", str(out)])
    assert exit_.value.code == 2
    with pytest.raises(ExportRefused):
        export_peft(mixed, tmp_path / "no")


def test_a_packaged_backbone_name_is_exported_as_a_folder_peft_loads(
        tmp_path, tiny_bert_path, monkeypatch) -> None:
    """An artefact trained on ``minilm`` (a packaged name, here standing for the tiny BERT)
    names its folder in adapter_config.json: peft loads the base from it alone."""
    from peft import AutoPeftModelForFeatureExtraction

    monkeypatch.setattr(workers.models, "minilm_folder", lambda: tiny_bert_path)
    artifact = _artifact(tmp_path, "minilm", EXPORTABLE["lora"])
    assert json.loads((artifact / "manifest.json").read_text())["backbone"]["name"] == "minilm"
    out = tmp_path / "peft"
    export_peft(artifact, out)
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(tiny_bert_path) and Path(base).is_dir()
    peft_model = AutoPeftModelForFeatureExtraction.from_pretrained(str(out))
    assert peft_model.peft_config["default"].r == 4
    classifier = load_classifier("minilm", artifact)
    exported = load_peft_export("minilm", out)
    assert (exported.logits(TEXTS) - classifier.logits(TEXTS)).abs().max().item() <= 1e-5


def test_a_hub_id_is_kept_as_the_base(monkeypatch) -> None:
    from workers.export import loadable_base

    monkeypatch.chdir(Path(__file__).parent)  # no folder of that name here
    assert loadable_base("sentence-transformers/all-MiniLM-L6-v2") \
        == "sentence-transformers/all-MiniLM-L6-v2"


def _cli_without_torch(args: list[str]) -> tuple[int, list[str], set[str], float]:
    """``autopeft ARGS`` in a fresh interpreter: exit status, stderr lines other than
    ``-X importtime``'s, the top-level modules it imported, seconds."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "autopeft_service.cli",
                           *args], capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started
    lines = done.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines
                if line.startswith("import time:")}
    return done.returncode, [line for line in lines if not line.startswith("import time:")], \
        imported, seconds


@pytest.mark.parametrize("case", ["missing", "no manifest"])
def test_the_cli_refuses_a_missing_artefact_at_once_without_torch(case, tmp_path) -> None:
    folder = tmp_path / "missing"
    if case == "no manifest":
        folder.mkdir()
    code, err, imported, seconds = _cli_without_torch(
        ["export", str(folder), "--format", "peft", "-o", str(tmp_path / "X")])
    assert code == 2 and len(err) == 1 and err[0].startswith("autopeft: error: export: ")
    assert str(folder) in err[0]
    assert {"torch", "peft", "transformers"}.isdisjoint(imported)
    assert "autopeft_service" in imported  # importtime did see the imports
    assert seconds < 3, f"took {seconds:.1f} s"
    assert not (tmp_path / "X").exists()


def test_the_cli_refuses_a_full_output_folder_without_torch(tmp_path, tiny_bert_path) -> None:
    artifact = _artifact(tmp_path, tiny_bert_path, EXPORTABLE["ia3"])
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    code, err, imported, _seconds = _cli_without_torch(
        ["export", str(artifact), "--format", "peft", "-o", str(full)])
    assert code == 2 and err == [f"autopeft: error: export: {full}: exists and is not an "
                                 "empty folder"]
    assert "torch" not in imported
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
