"""Load a HuggingFace backbone and its tokenizer from a packaged name, a local folder or a
hub name.

Encoders load as the bare model (``AutoModel``). Decoders (``BackboneDims.is_decoder``)
load as the causal LM: the backbone is its base model (``LlamaModel``, ``GPT2Model``) and its
LM head is kept beside it, frozen, for causal-LM tasks. A decoder's tokenizer pads on the
right with its pad token, or its end-of-sequence token when it has none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from autopeft_service.domain.backbone import DECODER_MODEL_TYPES, BackboneDims
from autopeft_service.domain.errors import ConfigError, ModelError


@dataclass
class Backbone:
    """A loaded backbone.

    Attributes:
        model: the encoder or the decoder's base model (``BertModel``, ``LlamaModel``,
            ``GPT2Model``), in eval mode, frozen.
        tokenizer: its (fast) tokenizer.
        dims: its dimensions and exact parameter count.
        source: the name, path or hub name it came from.
        lm_head: a decoder's output projection to the vocabulary (frozen; tied to the
            input embeddings where the model ties them); None for encoders.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    dims: BackboneDims
    source: str
    lm_head: nn.Module | None = None


def load_backbone(source: str | Path, attn_implementation: str = "sdpa") -> Backbone:
    """Load a backbone from a packaged name (``workers.models``), a local folder, or by hub
    name when the network allows.

    Args:
        source: ``minilm``/``smollm2``, a folder with ``config.json``, weights and tokenizer
            files, or a hub id.
        attn_implementation: ``"sdpa"`` or ``"eager"``.

    Raises:
        ModelError: the folder is missing or incomplete, the hub is unreachable, or the
            architecture is not supported.
    """
    from workers.models import resolve_model

    name = str(source)
    source = resolve_model(name)
    local = Path(source).expanduser()
    looks_local = local.exists() or source.startswith((".", "/", "~")) or os.sep in source.strip("/")
    if looks_local and not (local / "config.json").is_file():
        raise ModelError(f"model: {source} is not a model folder (no config.json)")
    location = str(local) if looks_local else source
    lm_head: nn.Module | None = None
    model: PreTrainedModel
    try:
        config = AutoConfig.from_pretrained(location, local_files_only=looks_local)
        decoder = config.model_type in DECODER_MODEL_TYPES
        if decoder:
            causal_lm = AutoModelForCausalLM.from_pretrained(
                location, attn_implementation=attn_implementation, local_files_only=looks_local)
            # base_model is annotated nn.Module; a causal LM's is its PreTrainedModel body
            # (LlamaModel, GPT2Model: the module under base_model_prefix)
            model = cast(PreTrainedModel, causal_lm.base_model)
            lm_head = causal_lm.get_output_embeddings()
        else:
            model = AutoModel.from_pretrained(location, attn_implementation=attn_implementation,
                                              local_files_only=looks_local)
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=looks_local)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ModelError(f"model: cannot load {name!r}: {first_line}") from None
    try:
        dims = BackboneDims.from_hf_config(model.config.to_dict(),
                                           with_pooler=getattr(model, "pooler", None) is not None)
    except ConfigError as error:
        raise ModelError(str(error)) from None
    if dims.total_parameters != model.num_parameters():
        raise ModelError(f"model: {name}: parameter count {model.num_parameters()} differs "
                         f"from the analytic {dims.total_parameters}; unsupported layout")
    if decoder:
        _right_padding(tokenizer, name)
        model.config.use_cache = False  # trials train and score whole sequences: no KV cache
    model.requires_grad_(False)
    model.eval()
    if lm_head is not None:
        lm_head.requires_grad_(False)
    return Backbone(model=model, tokenizer=tokenizer, dims=dims, source=name, lm_head=lm_head)


def _right_padding(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Pad on the right with the pad token, or the end-of-sequence token when there is none
    (every padded position is masked, so which id fills it does not matter).

    Raises:
        ModelError: the tokenizer has neither.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"model: {name}: the tokenizer has no pad and no end-of-sequence "
                             "token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
