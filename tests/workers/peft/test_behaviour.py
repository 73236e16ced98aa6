"""Initialisation, gradient flow and attention masking of the PEFT modules."""

import pytest
import torch

from autopeft_service.domain import PeftConfig
from tests.workers.peft.conftest import NUM_LAYERS, batch, make_encoder, parameters_with_gradients
from workers.peft import apply_peft
from workers.task_model import TaskModel

L = NUM_LAYERS
ZERO_INIT = {
    "parallel_ffn": {"parallel_adapters": [{"sizes": [4, 4, 4]}]},
    "parallel_attention": {"parallel_adapters": [{"sizes": [4, 0, 4], "position": "attention"}]},
    "lora": {"lora": {"ranks": [4, 4, 4], "targets": ["query", "value", "ffn_in", "ffn_out"]}},
    "serial": {"serial_adapters": [{"sizes": [4, 4, 4]}]},
    "ia3": {"ia3": {"layers": [True, True, True]}},
    "bitfit": {"bitfit": {"layers": [True, True, True]}},
}


@pytest.mark.parametrize("method", sorted(ZERO_INIT))
def test_zero_initialised_methods_leave_outputs_unchanged(encoder_factory, method: str) -> None:
    model, dims = encoder_factory()
    inputs = batch()
    with torch.no_grad():
        reference = model(**inputs).last_hidden_state
        apply_peft(model, PeftConfig.from_dict({"num_layers": L, **ZERO_INIT[method]}), dims)
        adapted = model(**inputs).last_hidden_state
    torch.testing.assert_close(adapted, reference, rtol=0, atol=1e-5)


def test_prefix_changes_outputs(encoder_factory) -> None:
    model, dims = encoder_factory()
    inputs = batch()
    with torch.no_grad():
        reference = model(**inputs).last_hidden_state
        apply_peft(model, PeftConfig.from_dict({"num_layers": L,
                                                "prefix": {"lengths": [2, 2, 2]}}), dims)
        assert not torch.allclose(model(**inputs).last_hidden_state, reference, atol=1e-4)


ALL_METHODS = {
    "serial_adapters": [{"sizes": [8, 0, 8]}],
    "parallel_adapters": [{"sizes": [0, 8, 8]}, {"sizes": [8, 0, 0], "position": "attention"}],
    "prefix": {"lengths": [2, 0, 3], "mlp_width": 8},
    "lora": {"ranks": [0, 2, 2]},
    "bitfit": {"layers": [True, False, False]},
    "ia3": {"layers": [False, False, True]},
}
PEFT_MARKERS = (".serial.", ".parallel.", "prefix_encoder.", "lora_A", "lora_B", "ia3_scale")


def test_gradients_reach_only_peft_parameters_and_head(encoder_factory) -> None:
    encoder, dims = encoder_factory()
    apply_peft(encoder, PeftConfig.from_dict({"num_layers": L, **ALL_METHODS}), dims)
    # Give zero-initialised up-projections a value so every PEFT tensor gets a gradient.
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if parameter.requires_grad and (".up." in name or "lora_B" in name):
                parameter.normal_(0, 0.1)
    model = TaskModel(encoder, dims.hidden_size, 2, "mean", 0.0)
    loss = torch.nn.functional.cross_entropy(model(**batch()), torch.tensor([0, 1]))
    loss.backward()
    trainable = parameters_with_gradients(model)
    bitfit_layer = "backbone.encoder.layer.0."
    expected = {n for n, _ in model.named_parameters()
                if n.startswith("head.") or any(m in n for m in PEFT_MARKERS)
                or (n.startswith(bitfit_layer) and n.endswith("bias")
                    and not any(m in n for m in PEFT_MARKERS))}
    assert trainable == expected
    assert any(n.startswith(bitfit_layer) and n.endswith("LayerNorm.bias") for n in trainable)


def test_prefix_respects_padding_and_matches_eager() -> None:
    outputs = {}
    for attn in ("eager", "sdpa"):
        model, dims = make_encoder("bert", attn=attn)
        apply_peft(model, PeftConfig.from_dict({"num_layers": L,
                                                "prefix": {"lengths": [3, 1, 2]}}), dims)
        with torch.no_grad():
            inputs = batch()
            padded = model(**inputs).last_hidden_state
            alone = model(input_ids=inputs["input_ids"][1:, :6]).last_hidden_state
        # the padded sequence's real tokens equal the same sequence run without padding
        torch.testing.assert_close(padded[1, :6], alone[0], rtol=1e-4, atol=1e-5)
        outputs[attn] = padded
    torch.testing.assert_close(outputs["eager"], outputs["sdpa"], rtol=1e-4, atol=1e-5)


def test_prefix_attention_equals_explicit_computation() -> None:
    model, dims = make_encoder("bert", attn="eager")
    apply_peft(model, PeftConfig.from_dict({"num_layers": L, "prefix": {"lengths": [4, 0, 0],
                                                                         "reparameterize": False}}),
               dims)
    attention = model.encoder.layer[0].attention.self
    base, heads, size = attention.base, 4, 8
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        output, _ = attention(x)
        prefix_k, prefix_v = model.prefix_encoder.key_values(0)
        keys = torch.cat([prefix_k, base.key(x)[0]])  # (4 + 5, 32)
        values = torch.cat([prefix_v, base.value(x)[0]])
        query = base.query(x)[0]
        expected = []
        for h in range(heads):
            part = slice(h * size, (h + 1) * size)
            scores = query[:, part] @ keys[:, part].T / size ** 0.5
            expected.append(scores.softmax(-1) @ values[:, part])
    torch.testing.assert_close(output[0], torch.cat(expected, dim=-1), rtol=1e-5, atol=1e-6)
