"""Parameter and FLOP accounting for the model family (pure functions, no torch).

Conventions follow the paper and its released logs (Cheng et al. 2024, "gigaflos without embeddings"):

- ``N`` (``n_params_non_embedding``): every trainable parameter except the embedding tables (token,
  position, token-type).  The tied output projection *is* the token table and is excluded with it; the
  LM-head transform (dense + LayerNorm + output bias) is counted.
- ``C = 6 N D`` training FLOPs for ``D`` tokens (Kaplan et al. 2020 eq. 2.1; Hoffmann et al. 2022 §3):
  2 FLOPs per multiply-accumulate, times 3 for forward plus backward.
- For utilisation (MFU) the attention score FLOPs are added: ``6 N + 12 L d T`` per token
  (Chowdhery et al. 2022, PaLM App. B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FFN_MULTIPLIER = 4


@dataclass(frozen=True)
class ModelShape:
    """A transformer shape: ``layers`` blocks of width ``width`` with ``heads`` attention heads."""

    layers: int
    width: int
    heads: int

    def __post_init__(self) -> None:
        for name in ("layers", "width", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model shape {name}={value!r} must be a positive integer")
        if self.width % self.heads:
            raise ValueError(
                f"model shape width={self.width} is not divisible by heads={self.heads}; "
                "choose heads that divide the width (head dimension = width / heads)"
            )

    def __str__(self) -> str:
        """Readable in logs: ``3 layers x 64 wide, 4 heads (N=123,456)``, N the non-embedding parameters
        (:func:`n_params_non_embedding`) with the ESM-2 vocabulary of plmscale's tokenizer."""
        from plmscale.tokens import VOCAB_SIZE

        layers = f"{self.layers} layer{'s' if self.layers != 1 else ''}"
        n = n_params_non_embedding(self, VOCAB_SIZE)
        return f"{layers} x {self.width} wide, {self.heads} head{'s' if self.heads != 1 else ''} (N={n:,})"

    @property
    def ffn_width(self) -> int:
        return FFN_MULTIPLIER * self.width

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


def n_params_non_embedding(shape: ModelShape, vocab_size: int) -> int:
    """Exact non-embedding parameter count of the pre-LN encoder/decoder used by plmscale.

    Per block (d = width, f = 4 d): Q, K, V, O projections with biases ``4 (d^2 + d)``, two LayerNorms
    ``4 d``, feed-forward ``2 d f + f + d``.  Outside the blocks: the embedding LayerNorm ``2 d``, the
    final LayerNorm ``2 d`` and the LM-head transform (dense ``d^2 + d``, LayerNorm ``2 d``, output bias
    ``vocab_size``).
    """
    d, f = shape.width, shape.ffn_width
    per_block = 4 * (d * d + d) + 4 * d + 2 * d * f + f + d
    outside = 2 * d + 2 * d + (d * d + d) + 2 * d + vocab_size
    return shape.layers * per_block + outside


def n_params_embedding(shape: ModelShape, vocab_size: int, max_positions: int) -> int:
    """Parameters of the embedding tables: tokens, learned positions and the single token type."""
    return shape.width * (vocab_size + max_positions + 1)


def training_flops(n_params: int, num_tokens: float) -> float:
    """``C = 6 N D`` (Kaplan et al. 2020, Hoffmann et al. 2022): FLOPs to train on ``num_tokens``."""
    return 6.0 * n_params * num_tokens


def tokens_for_budget(flops: float, n_params: int) -> float:
    """``D = C / (6 N)``: the number of training tokens a compute budget buys for a model of size N."""
    if flops <= 0 or n_params <= 0:
        raise ValueError(f"flops={flops} and n_params={n_params} must both be positive")
    return flops / (6.0 * n_params)


def steps_for_budget(flops: float, n_params: int, tokens_per_step: int) -> int:
    """Optimizer steps needed to consume ``D = C / (6 N)`` tokens, rounded up."""
    if tokens_per_step <= 0:
        raise ValueError(f"tokens_per_step={tokens_per_step} must be positive")
    return math.ceil(tokens_for_budget(flops, n_params) / tokens_per_step)


def flops_per_token_with_attention(shape: ModelShape, n_params: int, context: int) -> float:
    """``6 N + 12 L d T`` training FLOPs per token including attention scores (PaLM App. B)."""
    return 6.0 * n_params + 12.0 * shape.layers * shape.width * context
