"""One model family for both objectives, built on Hugging Face ``transformers`` classes.

Both objectives use the same pre-LayerNorm transformer blocks (``RobertaPreLayerNorm``: pre-LN like
ESM-2 and Megatron-GPT, GELU feed-forward of width 4d, learned positions, SDPA attention by default; see
:mod:`plmscale.attention` for the other backends).  They differ only in the attention mask (bidirectional
for MLM, causal for CLM) and the loss.  The two heads share parameter names, so a CLM checkpoint can
initialise an MLM (the paper's CLM->MLM transfer).

Saved runs load with ``AutoModelForMaskedLM`` (MLM) or ``AutoModelForCausalLM`` (CLM).
"""

from __future__ import annotations

from typing import Literal

import torch
from transformers import (
    PreTrainedModel,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForCausalLM,
    RobertaPreLayerNormForMaskedLM,
)

from plmscale.flops import ModelShape
from plmscale.tokens import CLS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

Objective = Literal["clm", "mlm"]
OBJECTIVES: tuple[str, ...] = ("clm", "mlm")
# RoBERTa-style learned positions start after the padding index (positions 0..pad are reserved).
POSITION_OFFSET = PAD_ID + 1


def model_config(shape: ModelShape, objective: str, context: int) -> RobertaPreLayerNormConfig:
    """The HF config of a run: vocabulary of ESM-2 (33 tokens), no dropout (the paper's "noreg")."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {OBJECTIVES}")
    return RobertaPreLayerNormConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape.width,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn_width,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=context + POSITION_OFFSET,
        type_vocab_size=1,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        pad_token_id=PAD_ID,
        bos_token_id=CLS_ID,
        eos_token_id=EOS_ID,
        is_decoder=objective == "clm",
        tie_word_embeddings=True,
        use_cache=False,
        attn_implementation="sdpa",
    )


def build_model(
    shape: ModelShape, objective: str, context: int, seed: int, *, attention: str = "sdpa"
) -> PreTrainedModel:
    """A freshly initialised model; the initialisation is a function of ``seed`` alone.

    ``attention`` is the attention backend (:data:`plmscale.attention.ATTENTION_BACKENDS`), set with
    :func:`plmscale.attention.set_backend`; it changes no weight and is not saved in ``config.json``.
    """
    config = model_config(shape, objective, context)
    torch.manual_seed(seed)
    cls = RobertaPreLayerNormForCausalLM if objective == "clm" else RobertaPreLayerNormForMaskedLM
    model = cls(config)
    if attention != "sdpa":
        from plmscale.attention import set_backend  # lazy: plmscale.attention imports data -> model

        set_backend(model, attention)
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(non-embedding, embedding) parameter counts of a built model; tied weights counted once."""
    embedding = 0
    non_embedding = 0
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        if name.endswith(
            ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")
        ):
            embedding += param.numel()
        else:
            non_embedding += param.numel()
    return non_embedding, embedding
