"""Export to HuggingFace peft (workers/export.py): peft's ``PeftModel.from_pretrained`` on
the exported folder gives this engine's logits for LoRA with per-layer ranks, (IA)^3 and
prefix tuning; every configuration peft cannot express is refused naming the part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from autopeft_service.cli.main import main as cli_main
from autopeft_service.domain import PeftConfig, TrainingSettings
from workers.artifact import load_classifier
from workers.data import TokenizedCache
from workers.export import ExportRefused, export_peft, load_peft_export, refusal
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


def _artifact(tmp_path: Path, model: Path, config: dict) -> Path:
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
    texts = ["a b c d e f g", "b", "c d e", "f g a b c d e f g a b c d e f"]
    batch = classifier.tokenize(texts).batch(torch.arange(len(texts)))
    batch.pop("labels")
    with torch.no_grad():
        ours = classifier.model(**batch)
    exported = load_peft_export(tiny_bert_path, out)
    theirs = exported.logits(batch["input_ids"], batch["attention_mask"],
                             batch.get("token_type_ids"))
    assert (ours - theirs).abs().max().item() <= 1e-5
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
