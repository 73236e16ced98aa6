"""Both shares of a configuration: deployed (the default objective) and trainable."""

from __future__ import annotations

import pytest

from autopeft_service.domain.backbone import MINILM_DIMS
from autopeft_service.domain.peft_config import PeftConfig
from autopeft_service.domain.share import planned_counts, share_percent

# MiniLM-L6 (hidden 384, 6 layers, 12 heads, FFN 1536, BERT's 30,522-word vocabulary,
# 512 positions, 2 token types), counted by hand: the backbone total count_parameters
# divides by (MINILM_DIMS.total_parameters).
HIDDEN, LAYERS, FFN, VOCAB, POSITIONS, TYPES = 384, 6, 1536, 30_522, 512, 2
EMBEDDINGS = (VOCAB + POSITIONS + TYPES) * HIDDEN + 2 * HIDDEN  # + LayerNorm
LAYER = (4 * (HIDDEN * HIDDEN + HIDDEN)  # query, key, value, attention output
         + 2 * HIDDEN  # attention LayerNorm
         + HIDDEN * FFN + FFN + FFN * HIDDEN + HIDDEN  # FFN in and out
         + 2 * HIDDEN)  # output LayerNorm
POOLER = HIDDEN * HIDDEN + HIDDEN
BACKBONE = EMBEDDINGS + LAYERS * LAYER + POOLER

#: A prefix of 10 positions at every layer, through Li & Liang's MLP of width 800.
TOKENS, MLP_WIDTH = 10 * LAYERS, 800
#: What is stored per task: a key and a value vector per prefix position.
DEPLOYED = 2 * TOKENS * HIDDEN
#: What trains: the (tokens x d) embedding the MLP reads, and the MLP d -> 800 -> 2d with
#: biases (shared by all layers), folded away after training.
MLP = HIDDEN * MLP_WIDTH + MLP_WIDTH + MLP_WIDTH * 2 * HIDDEN + 2 * HIDDEN
TRAINABLE = TOKENS * HIDDEN + MLP


def test_the_hand_counted_backbone_is_the_share_denominator() -> None:
    assert BACKBONE == MINILM_DIMS.total_parameters == 22_713_216
    assert (MINILM_DIMS.hidden_size, MINILM_DIMS.num_layers, MINILM_DIMS.num_heads,
            MINILM_DIMS.ffn_size) == (HIDDEN, LAYERS, 12, FFN)


def test_the_trainable_share_of_a_prefix_includes_its_mlp() -> None:
    config = PeftConfig(num_layers=LAYERS, prefix={"lengths": [10] * LAYERS,
                                                   "mlp_width": MLP_WIDTH})
    assert (DEPLOYED, MLP, TRAINABLE) == (46_080, 923_168, 946_208)
    trainable = share_percent(config, MINILM_DIMS, "trainable")
    deployed = share_percent(config, MINILM_DIMS, "deployed")
    assert trainable == pytest.approx(100 * TRAINABLE / BACKBONE)  # 4.166 %
    assert deployed == pytest.approx(100 * DEPLOYED / BACKBONE)  # 0.203 %
    assert trainable > 20 * deployed
    assert share_percent(config, MINILM_DIMS) == deployed  # the default objective
    planned = planned_counts(config, MINILM_DIMS, "trainable")
    assert (planned.trainable, planned.deployed, planned.share) == (TRAINABLE, DEPLOYED,
                                                                    trainable)
    assert planned_counts(config, MINILM_DIMS).share == deployed


def test_without_reparameterisation_both_shares_are_one() -> None:
    direct = PeftConfig(num_layers=LAYERS, prefix={"lengths": [10] * LAYERS,
                                                   "reparameterize": False})
    assert share_percent(direct, MINILM_DIMS, "trainable") \
        == share_percent(direct, MINILM_DIMS, "deployed") \
        == pytest.approx(100 * DEPLOYED / BACKBONE)
