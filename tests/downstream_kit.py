"""Shared test material for the downstream tests: a tiny ESM-2 checkpoint built with the real Hugging Face
classes (``EsmForMaskedLM`` + ``EsmTokenizer``, saved with ``save_pretrained``; nothing from the hub) and
a synthetic labelled protein set whose classes differ in residue composition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

CLASS_RESIDUES = ("LIVFAM", "KEDRQN", "GPSTYH")  # class k draws 80% of its residues from this set


def tiny_esm(directory: Path, *, hidden: int = 16, layers: int = 1, seed: int = 0) -> Path:
    """Save a randomly initialised ESM-2-style ``EsmForMaskedLM`` and its ``EsmTokenizer`` in ``directory``.

    Nothing comes from the hub."""
    import torch
    from plmscale.tokens import esm_tokenizer
    from transformers import EsmConfig, EsmForMaskedLM

    torch.manual_seed(seed)
    config = EsmConfig(
        vocab_size=33,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=130,
        position_embedding_type="rotary",
        pad_token_id=1,
        mask_token_id=32,
        token_dropout=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        emb_layer_norm_before=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    EsmForMaskedLM(config).save_pretrained(directory)
    esm_tokenizer(directory / "vocab").save_pretrained(directory)
    return directory


def synthetic_sequences(n: int, n_classes: int, seed: int, *, min_len: int = 20, max_len: int = 60):
    rng = np.random.default_rng(seed)
    everything = "ACDEFGHIKLMNPQRSTVWY"
    labels = rng.integers(0, n_classes, size=n)
    seqs = []
    for label in labels:
        length = int(rng.integers(min_len, max_len + 1))
        pool = CLASS_RESIDUES[int(label)]
        own = rng.random(length) < 0.8
        chars = np.where(own, rng.choice(list(pool), size=length), rng.choice(list(everything), size=length))
        seqs.append("".join(chars))
    return seqs, labels.astype(np.int64)


def synthetic_dataset(path: Path, n_classes: int = 2, sizes=(60, 24, 30), seed: int = 0) -> Path:
    """A converted-dataset Parquet (the schema of plmscale.locdata): split, row, id, sequence, length,
    label_id, label."""
    frames = []
    for k, (split, n) in enumerate(zip(("train", "valid", "test"), sizes, strict=True)):
        seqs, labels = synthetic_sequences(n, n_classes, seed + k)
        frames.append(
            pl.DataFrame(
                {
                    "split": [split] * n,
                    "row": np.arange(n),
                    "id": [f"{split}:{i}" for i in range(n)],
                    "sequence": seqs,
                    "length": [len(s) for s in seqs],
                    "label_id": labels,
                    "label": [f"class{i}" for i in labels],
                }
            )
        )
    pl.concat(frames).write_parquet(path)
    return path
