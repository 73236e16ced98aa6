"""PEFT modules, one file per method, and their injection into encoders (BERT, RoBERTa) and
decoders (the Llama family, GPT-2); ``arch.py`` says where each architecture's parts live.

Each method file holds the ``nn.Module`` and a ``build`` function registered with
``@injector(field, order)`` (``registry.py``) that builds the method's modules for its
``PeftConfig`` field; its configuration is the matching pydantic model in
``autopeft_service.domain.peft_config`` (shared with the server, which must validate
configurations without torch). ``apply_peft`` runs every registered ``build`` in order to
build a whole ``PeftConfig``.
"""

from workers.peft.arch import ARCHITECTURES, ArchitectureMapping, mapping_for
from workers.peft.inject import apply_peft, trainable_parameter_count

__all__ = ["ARCHITECTURES", "ArchitectureMapping", "apply_peft", "mapping_for",
           "trainable_parameter_count"]
