"""Every PEFT method on decoders (Llama, Qwen2, Qwen3, Mistral, GPT-2): exact counts, zero
initialisation, gradient flow, and prefix attention under the causal mask."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from autopeft_service.domain import BackboneDims, ConfigError, ModelError, PeftConfig
from autopeft_service.domain.param_count import count_parameters
from tests.workers.peft.conftest import parameters_with_gradients
from workers.peft import apply_peft, trainable_parameter_count
from workers.task_model import TaskModel, pool

L = 3
VOCAB = 50


def make_decoder(model_type: str, attn: str = "sdpa", seed: int = 0
                 ) -> tuple[torch.nn.Module, torch.nn.Module, BackboneDims]:
    """A random 3-layer decoder (hidden 32, 4 heads, 2 key/value heads where grouped-query
    attention exists, FFN 48): its base model, its LM head, and its dims."""
    if model_type == "gpt2":
        config = AutoConfig.for_model("gpt2", vocab_size=VOCAB, n_embd=32, n_layer=L, n_head=4,
                                      n_inner=48, n_positions=40, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0)
    else:
        extra = {"head_dim": 8} if model_type == "qwen3" else {}
        config = AutoConfig.for_model(model_type, vocab_size=VOCAB, hidden_size=32,
                                      num_hidden_layers=L, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=48,
                                      max_position_embeddings=40, **extra)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    causal_lm = AutoModelForCausalLM.from_config(config).eval()
    dims = BackboneDims.from_hf_config(config.to_dict())
    assert dims.total_parameters == causal_lm.base_model.num_parameters()
    return causal_lm.base_model, causal_lm.get_output_embeddings(), dims


DECODERS = ["llama", "qwen2", "qwen3", "mistral", "gpt2"]


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Two sequences of 9 tokens, the second right-padded after 6."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, VOCAB, (2, 9), generator=generator)
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


METHODS = {
    "serial_ffn": {"serial_adapters": [{"sizes": [4, 0, 8]}]},
    "serial_attention": {"serial_adapters": [{"sizes": [2, 2, 2], "position": "attention"}]},
    "parallel_ffn": {"parallel_adapters": [{"sizes": [4, 4, 0], "learned_scale": True}]},
    "parallel_attention": {"parallel_adapters": [{"sizes": [0, 4, 4], "position": "attention"}]},
    "prefix": {"prefix": {"lengths": [3, 0, 2], "mlp_width": 8}},
    "prefix_direct": {"prefix": {"lengths": [1, 2, 3], "reparameterize": False}},
    "lora_attention": {"lora": {"ranks": [2, 4, 0],
                                "targets": ["query", "key", "value", "attention_output"]}},
    "lora_ffn": {"lora": {"ranks": [1, 1, 1], "targets": ["ffn_in", "ffn_out"]}},
    "lora_gate": {"lora": {"ranks": [2, 0, 2], "targets": ["ffn_gate"]}},
    "ia3": {"ia3": {"layers": [True, False, True]}},
    "bitfit": {"bitfit": {"layers": [True, False, True]}},
    "combined": {"serial_adapters": [{"sizes": [4, 0, 0]}],
                 "parallel_adapters": [{"sizes": [2, 2, 2], "position": "attention",
                                        "activation": "gelu"}],
                 "prefix": {"lengths": [2, 2, 0], "mlp_width": 8},
                 "lora": [{"ranks": [2, 2, 2], "targets": ["query", "value"]},
                          {"ranks": [0, 1, 0], "targets": ["ffn_out"]}],
                 "ia3": {"layers": [False, True, True], "targets": ["key", "ffn"]}},
}


def _refused(model_type: str, method: str) -> bool:
    """BitFit where the layers have no bias; the gate projection where the FFN has none."""
    return ((method == "bitfit" and model_type in ("llama", "qwen3", "mistral"))
            or (method == "lora_gate" and model_type == "gpt2"))


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("model_type", DECODERS)
def test_count_equals_built_trainable_minus_head(model_type: str, method: str) -> None:
    backbone, _, dims = make_decoder(model_type)
    config = PeftConfig.from_dict({"num_layers": L, **METHODS[method]})
    if _refused(model_type, method):
        with pytest.raises(ConfigError):
            count_parameters(config, dims)
        with pytest.raises(ModelError):
            apply_peft(backbone, config, dims)
        return
    apply_peft(backbone, config, dims)
    model = TaskModel(backbone, dims.hidden_size, 3, "last", 0.0)
    built = trainable_parameter_count(model) - model.head_parameter_count()
    assert built == count_parameters(config, dims).trainable > 0


ZERO_INIT = ["serial_ffn", "serial_attention", "parallel_ffn", "parallel_attention",
             "lora_attention", "lora_ffn", "lora_gate", "ia3", "bitfit"]


@pytest.mark.parametrize(("model_type", "method"), [
    (m, k) for m in DECODERS for k in ZERO_INIT if not _refused(m, k)])  # refusals: above
def test_zero_initialised_methods_leave_logits_unchanged(model_type: str, method: str) -> None:
    backbone, lm_head, dims = make_decoder(model_type)
    inputs = batch()
    with torch.no_grad():
        reference = lm_head(backbone(**inputs).last_hidden_state)
        apply_peft(backbone, PeftConfig.from_dict({"num_layers": L, **METHODS[method]}), dims)
        adapted = lm_head(backbone(**inputs).last_hidden_state)
    torch.testing.assert_close(adapted, reference, rtol=0, atol=1e-5)


PEFT_MARKERS = (".serial.", ".parallel.", "prefix_encoder.", "lora_A", "lora_B", "ia3_scale")


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gpt2"])
def test_gradients_reach_only_peft_parameters_and_head(model_type: str) -> None:
    backbone, _, dims = make_decoder(model_type)
    methods = dict(METHODS["combined"])
    if model_type in ("qwen2", "gpt2"):
        methods["bitfit"] = {"layers": [True, False, False]}
    apply_peft(backbone, PeftConfig.from_dict({"num_layers": L, **methods}), dims)
    with torch.no_grad():  # give zero-initialised up-projections a value
        for name, parameter in backbone.named_parameters():
            if parameter.requires_grad and (".up." in name or "lora_B" in name):
                parameter.normal_(0, 0.1)
    model = TaskModel(backbone, dims.hidden_size, 2, "last", 0.0)
    torch.nn.functional.cross_entropy(model(**batch()), torch.tensor([0, 1])).backward()
    trainable = parameters_with_gradients(model)
    layers = "backbone.h.0." if model_type == "gpt2" else "backbone.layers.0."
    expected = {n for n, _ in model.named_parameters()
                if n.startswith("head.") or any(m in n for m in PEFT_MARKERS)
                or ("bitfit" in methods and n.startswith(layers) and n.endswith("bias"))}
    assert trainable == expected


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_prefix_respects_padding_and_matches_eager(model_type: str) -> None:
    outputs = {}
    for attn in ("eager", "sdpa"):
        backbone, _, dims = make_decoder(model_type, attn=attn)
        apply_peft(backbone, PeftConfig.from_dict({"num_layers": L,
                                                   "prefix": {"lengths": [3, 1, 2]}}), dims)
        with torch.no_grad():
            inputs = batch()
            padded = backbone(**inputs).last_hidden_state
            alone = backbone(input_ids=inputs["input_ids"][1:, :6]).last_hidden_state
            prefix_of_first = backbone(input_ids=inputs["input_ids"][:1, :4]).last_hidden_state
        # right padding changes nothing for the real tokens, and causality holds: the
        # first 4 tokens' states do not depend on the tokens after them
        torch.testing.assert_close(padded[1, :6], alone[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(padded[0, :4], prefix_of_first[0], rtol=1e-4, atol=1e-5)
        outputs[attn] = padded
    torch.testing.assert_close(outputs["eager"][0], outputs["sdpa"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs["eager"][1, :6], outputs["sdpa"][1, :6], rtol=1e-4,
                               atol=1e-5)


def _explicit_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        prefix: int, heads: int, kv_heads: int, size: int, scaling: float
                        ) -> torch.Tensor:
    """softmax(q k^T) v per head, query head h reading key/value head h // (heads/kv_heads),
    position t seeing the ``prefix`` positions and sequence positions up to t."""
    length = query.shape[0]
    visible = torch.ones(length, prefix + length, dtype=torch.bool)
    visible[:, prefix:] = torch.ones(length, length, dtype=torch.bool).tril()
    out = []
    for h in range(heads):
        kv = h // (heads // kv_heads)
        q = query[:, h * size:(h + 1) * size]
        k, v = keys[:, kv * size:(kv + 1) * size], values[:, kv * size:(kv + 1) * size]
        scores = (q @ k.T * scaling).masked_fill(~visible, float("-inf"))
        out.append(scores.softmax(-1) @ v)
    return torch.cat(out, dim=-1)


def test_llama_prefix_equals_explicit_computation() -> None:
    backbone, _, dims = make_decoder("llama", attn="eager")
    apply_peft(backbone, PeftConfig.from_dict(
        {"num_layers": L, "prefix": {"lengths": [4, 0, 0], "reparameterize": False}}), dims)
    attention = backbone.layers[0].self_attn
    base = attention.base
    x = torch.randn(1, 5, 32)
    position_ids = torch.arange(5).unsqueeze(0)
    cos, sin = backbone.rotary_emb(x, position_ids)
    with torch.no_grad():
        output, _ = attention(hidden_states=x, position_embeddings=(cos, sin),
                              attention_mask=None)
        query = base.q_proj(x).view(1, 5, 4, 8).transpose(1, 2)
        key = base.k_proj(x).view(1, 5, 2, 8).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        query = query.transpose(1, 2).reshape(5, 32)
        key = key.transpose(1, 2).reshape(5, 16)
        prefix_k, prefix_v = backbone.prefix_encoder.key_values(0)  # (4, 16) each: 2 kv heads
        keys = torch.cat([prefix_k, key])
        values = torch.cat([prefix_v, base.v_proj(x)[0]])
        expected = base.o_proj(_explicit_attention(query, keys, values, 4, 4, 2, 8, 8 ** -0.5))
    torch.testing.assert_close(output[0], expected, rtol=1e-5, atol=1e-6)


def test_gpt2_prefix_equals_explicit_computation() -> None:
    backbone, _, dims = make_decoder("gpt2", attn="eager")
    apply_peft(backbone, PeftConfig.from_dict(
        {"num_layers": L, "prefix": {"lengths": [0, 3, 0], "reparameterize": False}}), dims)
    attention = backbone.h[1].attn
    base = attention.base
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        output, _ = attention(x, attention_mask=None)
        query, key, value = base.c_attn(x)[0].split(32, dim=-1)
        prefix_k, prefix_v = backbone.prefix_encoder.key_values(1)
        mixed = _explicit_attention(query, torch.cat([prefix_k, key]),
                                    torch.cat([prefix_v, value]), 3, 4, 4, 8, 8 ** -0.5)
        expected = base.c_proj(mixed)
    torch.testing.assert_close(output[0], expected, rtol=1e-5, atol=1e-6)


def test_last_token_pooling_reads_the_last_real_token() -> None:
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    pooled = pool(hidden, mask, "last")
    torch.testing.assert_close(pooled, torch.stack([hidden[0, 3], hidden[1, 1]]))


def test_gpt2_lora_on_query_changes_only_queries() -> None:
    backbone, _, dims = make_decoder("gpt2")
    c_attn = backbone.h[0].attn.c_attn
    x = torch.randn(1, 3, 32)
    with torch.no_grad():
        before = c_attn(x)
        apply_peft(backbone, PeftConfig.from_dict(
            {"num_layers": L, "lora": {"ranks": [2, 0, 0], "targets": ["query"]}}), dims)
        lora = backbone.h[0].attn.c_attn
        lora.lora_B.normal_()
        after = lora(x)
    assert not torch.allclose(after[..., :32], before[..., :32])
    torch.testing.assert_close(after[..., 32:], before[..., 32:])


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_pre_norm_adapters_follow_the_sublayer_and_read_its_normed_input(model_type: str
                                                                         ) -> None:
    """Serial: out + adapter(out) after the MLP; parallel: out + s * adapter(x), with x
    what the MLP reads (the normed input), both before the residual add."""
    backbone, _, dims = make_decoder(model_type)
    apply_peft(backbone, PeftConfig.from_dict({"num_layers": L,
                                               "serial_adapters": [{"sizes": [4, 0, 0]}],
                                               "parallel_adapters": [{"sizes": [4, 0, 0],
                                                                      "scale": 2.0}]}), dims)
    wrapper = (backbone.h[0] if model_type == "gpt2" else backbone.layers[0]).mlp
    with torch.no_grad():
        for adapter in (*wrapper.serial, *wrapper.parallel):
            adapter.up.weight.normal_(0, 0.1)
        x = torch.randn(1, 5, 32)
        out = wrapper.base(x)
        expected = out + wrapper.serial[0](out) + 2.0 * wrapper.parallel[0](x)
        torch.testing.assert_close(wrapper(x), expected)
