"""The tiny test model folder loads like a real checkpoint and knows the synthetic words."""

from pathlib import Path

from workers.backbone import load_backbone
from workers.data import load_task


def test_tiny_bert_tokenizes_the_synthetic_task_without_unknown_words(tiny_bert_path: Path) -> None:
    backbone = load_backbone(tiny_bert_path)
    tokenizer = backbone.tokenizer
    for example in load_task("synthetic").train[:200]:
        ids = tokenizer(example.texts[0])["input_ids"]
        assert tokenizer.unk_token_id not in ids, example.texts[0]
    assert backbone.dims.num_layers == 2 and backbone.dims.hidden_size == 32
    assert not any(p.requires_grad for p in backbone.model.parameters())
