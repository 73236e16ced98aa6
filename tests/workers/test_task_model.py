"""The task models: the causal-LM model scores exactly the response tokens."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from workers.task_model import CausalLMModel, response_mask


def test_response_log_likelihoods_equal_the_causal_lms_own_logits() -> None:
    config = AutoConfig.for_model("llama", vocab_size=40, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2,
                                  intermediate_size=48, max_position_embeddings=32)
    torch.manual_seed(0)
    causal_lm = AutoModelForCausalLM.from_config(config).eval()
    model = CausalLMModel(causal_lm.base_model, causal_lm.get_output_embeddings())
    input_ids = torch.randint(3, 40, (2, 7))
    attention_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    starts = torch.tensor([3, 2])  # response tokens: row 0 positions 3-6, row 1 positions 2-4
    with torch.no_grad():
        scored = model.token_log_likelihoods(input_ids, attention_mask, starts)
        log_probs = causal_lm(input_ids=input_ids,
                              attention_mask=attention_mask).logits.log_softmax(-1)
    expected = torch.stack([log_probs[row, t - 1, input_ids[row, t]]
                            for row, positions in ((0, range(3, 7)), (1, range(2, 5)))
                            for t in positions])
    torch.testing.assert_close(scored, expected, rtol=1e-5, atol=1e-5)
    assert model(input_ids, attention_mask, starts) == -scored.mean()


def test_the_response_mask_skips_the_prompt_the_padding_and_position_zero() -> None:
    mask = response_mask(torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]), torch.tensor([0, 2]))
    assert mask.tolist() == [[False, True, True, True], [False, False, True, False]]
