"""Protein LM backbones for downstream tasks: the study's own runs and any Hugging Face checkpoint on disk.

A :class:`ModelSpec` names one model the downstream stage evaluates.  The study's runs are loaded from
their run directory (``RobertaPreLayerNorm``, tokenized with the project's ESM-2-vocabulary tokenizer,
:func:`plmscale.tokens.encode`); an external checkpoint (ESM-2, ESM-1b, a ProtST protein encoder, ...) is
loaded with ``AutoModel`` and its own ``AutoTokenizer`` from a local directory (``local_files_only``: no
hub access at run time).  Both become a :class:`Backbone`: token ids in, last hidden states out, and the
mask of residue positions (specials and padding excluded) for the mean readout ProtST uses.

Truncation: ``<cls>`` + the first ``max_length - 2`` residues + ``<eos>`` (what Hugging Face tokenizers do
with ``truncation=True``); the backbone's own position limit caps ``max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from plmscale.downstream_specs import (  # noqa: F401  (re-exported: the model specs live without torch)
    NAME_PATTERN,
    ModelSpec,
    check_checkpoint_dir,
    external_models,
)


class Backbone(torch.nn.Module):
    """An encoder and its tokenizer; ``forward(input_ids, attention_mask)`` -> last hidden states."""

    def __init__(self, encoder: torch.nn.Module, tokenizer: Any, *, max_positions: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer  # None = the project's own encode()
        self.max_positions = max_positions
        self.hidden_size = int(encoder.config.hidden_size)
        if tokenizer is None:
            from plmscale.tokens import CLS_ID, EOS_ID, PAD_ID

            self.pad_id, self.special_ids = PAD_ID, (CLS_ID, EOS_ID, PAD_ID)
        else:
            self.pad_id = int(tokenizer.pad_token_id)
            self.special_ids = tuple(int(i) for i in tokenizer.all_special_ids)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def tokenize(self, sequences: Sequence[str], max_length: int) -> list[np.ndarray]:
        """Token ids (int64, with the model's specials) of each sequence, truncated to ``max_length``."""
        limit = min(int(max_length), self.max_positions)
        if limit < 3:
            raise ValueError(f"max_length {max_length} leaves no residue (needs >= 3: <cls> x <eos>)")
        if self.tokenizer is None:
            from plmscale.tokens import encode

            ids, offsets = encode(list(sequences))
            out = []
            for i in range(len(sequences)):
                row = ids[offsets[i] : offsets[i + 1]].astype(np.int64)
                if len(row) > limit:
                    row = np.concatenate([row[: limit - 1], row[-1:]])  # keep <eos>
                out.append(row)
            return out
        encoded = self.tokenizer(list(sequences), truncation=True, max_length=limit, add_special_tokens=True)
        return [np.asarray(row, dtype=np.int64) for row in encoded["input_ids"]]


def _max_positions(config: Any, *, offset: int) -> int:
    value = getattr(config, "max_position_embeddings", None)
    return 1 << 30 if value is None else int(value) - offset


def load_backbone(spec: ModelSpec) -> Backbone:
    """The encoder of ``spec`` (no LM head, no pooler) with its tokenizer, on the CPU in fp32."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if spec.kind == "own":
        from plmscale.model import POSITION_OFFSET

        config = AutoConfig.from_pretrained(spec.path)
        encoder = AutoModel.from_pretrained(spec.path, add_pooling_layer=False, attn_implementation="sdpa")
        return Backbone(encoder, None, max_positions=_max_positions(config, offset=POSITION_OFFSET))
    path = check_checkpoint_dir(spec)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    try:
        encoder = AutoModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True)
    except TypeError:  # model classes without a pooler take no add_pooling_layer
        encoder = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer or path, local_files_only=True)
    # ESM / RoBERTa learned positions reserve padding_idx + 1 slots when position ids start after it
    offset = 2 if getattr(config, "position_embedding_type", "absolute") == "absolute" else 0
    return Backbone(encoder, tokenizer, max_positions=_max_positions(config, offset=offset))


def pad_batch(
    rows: Sequence[np.ndarray], pad_id: int, special_ids: Sequence[int], *, pad_to: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad token rows to the longest row (or to ``pad_to``): (input_ids, attention_mask, residue
    mask), the residue mask being 1 on tokens that are neither specials nor padding."""
    width = max(len(r) for r in rows) if pad_to is None else int(pad_to)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for j, row in enumerate(rows):
        input_ids[j, : len(row)] = torch.from_numpy(row[:width])
        attention[j, : len(row)] = 1
    residue = attention.bool() & ~torch.isin(input_ids, torch.tensor(list(special_ids), dtype=torch.long))
    return input_ids, attention, residue


def mean_readout(hidden: torch.Tensor, residue_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over residue positions (ProtST's "mean" readout), in fp32."""
    weights = residue_mask.unsqueeze(-1).to(torch.float32)
    return (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)
