"""Load a HuggingFace encoder and its tokenizer from a local folder or a hub name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from autopeft_service.domain.backbone import BackboneDims
from autopeft_service.domain.errors import ConfigError, ModelError


@dataclass
class Backbone:
    """A loaded encoder.

    Attributes:
        model: the encoder (``BertModel``/``RobertaModel``), in eval mode, frozen.
        tokenizer: its (fast) tokenizer.
        dims: its dimensions and exact parameter count.
        source: the path or hub name it came from.
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    dims: BackboneDims
    source: str


def load_backbone(source: str | Path, attn_implementation: str = "sdpa") -> Backbone:
    """Load an encoder from a local folder, or by hub name when the network allows.

    Args:
        source: a folder with ``config.json``, weights and tokenizer files, or a hub id.
        attn_implementation: ``"sdpa"`` or ``"eager"``.

    Raises:
        ModelError: the folder is missing or incomplete, or the hub is unreachable.
    """
    source = str(source)
    local = Path(source).expanduser()
    looks_local = local.exists() or source.startswith((".", "/", "~")) or os.sep in source.strip("/")
    if looks_local and not (local / "config.json").is_file():
        raise ModelError(f"model: {source} is not a model folder (no config.json)")
    location = str(local) if looks_local else source
    try:
        model = AutoModel.from_pretrained(location, attn_implementation=attn_implementation,
                                          local_files_only=looks_local)
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=looks_local)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ModelError(f"model: cannot load {source!r}: {first_line}") from None
    try:
        dims = BackboneDims.from_hf_config(model.config.to_dict(),
                                           with_pooler=getattr(model, "pooler", None) is not None)
    except ConfigError as error:
        raise ModelError(str(error)) from None
    if dims.total_parameters != model.num_parameters():
        raise ModelError(f"model: {source}: parameter count {model.num_parameters()} differs "
                         f"from the analytic {dims.total_parameters}; unsupported layout")
    model.requires_grad_(False)
    model.eval()
    return Backbone(model=model, tokenizer=tokenizer, dims=dims, source=source)
