"""Sequence packing into fixed-length rows, attention masks and objective targets.

Every sequence (``<cls> residues <eos>``) is cut into consecutive *documents* of at most ``context``
tokens (a long protein yields several windows, so no residue is thrown away).  Per epoch, documents
are shuffled by a permutation that depends only on ``(seed, epoch)`` and concatenated into a stream
that is cut into rows of exactly ``context`` tokens.  Inside a row, attention is blocked across
document boundaries (block-diagonal mask, causal within a document for CLM) and position ids restart
at each document.  Row ``r`` of the stream, and hence the batch of step ``s``, is a pure function of
``(seed, r)``: a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from plmscale.model import POSITION_OFFSET
from plmscale.tokens import CLS_ID, EOS_ID, MASK_ID, PAD_ID

IGNORE_INDEX = -100
# ids of the 20 standard amino acids in the ESM-2 vocabulary (L A G V S E R T I D P K Q N F Y M H W C)
STANDARD_RESIDUE_IDS = np.arange(4, 24)


@dataclass(frozen=True)
class Documents:
    """Windows of at most ``context`` tokens over a flat token array."""

    ids: np.ndarray  # uint8, all tokens of all sequences
    starts: np.ndarray  # int64, start of each document in ``ids``
    lengths: np.ndarray  # int64, tokens in each document (1..context)

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


def make_documents(ids: np.ndarray, offsets: np.ndarray, context: int) -> Documents:
    """Cut each sequence ``ids[offsets[i]:offsets[i+1]]`` into windows of at most ``context`` tokens."""
    if context < 2:
        raise ValueError(f"context={context} must be at least 2 tokens")
    offsets = np.asarray(offsets, dtype=np.int64)
    seq_lengths = np.diff(offsets)
    if np.any(seq_lengths <= 0):
        raise ValueError("token store contains an empty sequence; re-run validation and tokenization")
    n_windows = -(-seq_lengths // context)
    seq_of_window = np.repeat(np.arange(len(seq_lengths)), n_windows)
    first_window = np.cumsum(n_windows) - n_windows
    window_in_seq = np.arange(int(n_windows.sum())) - np.repeat(first_window, n_windows)
    starts = offsets[:-1][seq_of_window] + window_in_seq * context
    ends = np.minimum(starts + context, offsets[1:][seq_of_window])
    return Documents(ids=ids, starts=starts, lengths=ends - starts)


@dataclass(frozen=True)
class Rows:
    """A batch of packed rows (numpy, int64, shape ``(rows, context)``)."""

    tokens: np.ndarray
    positions: np.ndarray
    segments: np.ndarray  # document index within the row; -1 marks padding


class PackedStream:
    """The epoch-shuffled, packed token stream of a set of documents (see module docstring)."""

    def __init__(self, documents: Documents, context: int, seed: int, *, drop_last: bool = True) -> None:
        if documents.num_tokens == 0:
            raise ValueError("cannot pack an empty token store")
        self.documents = documents
        self.context = context
        self.seed = seed
        total = documents.num_tokens
        self.rows_per_epoch = total // context if drop_last else -(-total // context)
        if self.rows_per_epoch == 0:
            raise ValueError(
                f"the token store holds {total} tokens, fewer than one row of context={context}; "
                "use a smaller context or more data"
            )
        self._epoch = -1
        self._order: np.ndarray = np.empty(0, dtype=np.int64)
        self._ends: np.ndarray = np.empty(0, dtype=np.int64)

    def _layout(self, epoch: int) -> None:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = rng.permutation(len(self.documents.lengths))
            self._ends = np.cumsum(self.documents.lengths[self._order])
            self._epoch = epoch

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokens, positions and segment ids of global row ``index`` (epochs follow each other)."""
        epoch, local = divmod(index, self.rows_per_epoch)
        self._layout(epoch)
        t = self.context
        tokens = np.full(t, PAD_ID, dtype=np.int64)
        positions = np.full(t, POSITION_OFFSET, dtype=np.int64)
        segments = np.full(t, -1, dtype=np.int64)
        start = local * t
        k = int(np.searchsorted(self._ends, start, side="right"))
        filled = 0
        segment = 0
        docs = self.documents
        while filled < t and k < len(self._order):
            doc = self._order[k]
            doc_len = int(docs.lengths[doc])
            doc_begin = int(self._ends[k]) - doc_len
            skip = start + filled - doc_begin  # tokens of this document already in the previous row
            take = min(doc_len - skip, t - filled)
            src = int(docs.starts[doc]) + skip
            tokens[filled : filled + take] = docs.ids[src : src + take]
            positions[filled : filled + take] = POSITION_OFFSET + skip + np.arange(take)
            segments[filled : filled + take] = segment
            filled += take
            segment += 1
            k += 1
        return tokens, positions, segments

    def rows(self, first: int, count: int) -> Rows:
        parts = [self.row(first + i) for i in range(count)]
        return Rows(*(np.stack(x) for x in zip(*parts, strict=True)))


def attention_mask(segments: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean ``(B, 1, T, T)`` mask, True = may attend: same document (and not in the future for CLM).

    Padding (segment -1) attends only to padding, so no real token ever sees it.
    """
    same = segments[:, :, None] == segments[:, None, :]
    if causal:
        t = segments.shape[1]
        same = same & torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    return same[:, None, :, :]


def clm_labels(tokens: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Next-token targets inside each document; IGNORE_INDEX where the next token is another document."""
    labels = np.full_like(tokens, IGNORE_INDEX)
    same_doc = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] >= 0)
    labels[:, :-1] = np.where(same_doc, tokens[:, 1:], IGNORE_INDEX)
    return labels


def mlm_inputs(
    tokens: np.ndarray, rng: np.random.Generator, mask_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """BERT/ESM masking: select ``mask_ratio`` of residue positions; of those 80% ``<mask>``, 10% a random
    standard residue, 10% unchanged.  Returns (inputs, labels) with labels IGNORE_INDEX elsewhere."""
    eligible = (tokens != CLS_ID) & (tokens != EOS_ID) & (tokens != PAD_ID)
    draw = rng.random(tokens.shape)
    selected = eligible & (draw < mask_ratio)
    if not selected.any() and eligible.any():  # keep the loss defined on tiny batches
        first = np.argwhere(eligible)[0]
        selected[tuple(first)] = True
    action = rng.random(tokens.shape)
    random_ids = rng.choice(STANDARD_RESIDUE_IDS, size=tokens.shape)
    inputs = tokens.copy()
    inputs[selected & (action < 0.8)] = MASK_ID
    swap = selected & (action >= 0.8) & (action < 0.9)
    inputs[swap] = random_ids[swap]
    labels = np.where(selected, tokens, IGNORE_INDEX)
    return inputs, labels


@dataclass(frozen=True)
class Batch:
    """Model inputs of packed rows; the attention pattern is given by ``segments`` (document index within
    the row, -1 = padding) and turned into a mask or varlen metadata by :mod:`plmscale.attention`."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    labels: torch.Tensor


def make_batch(
    rows: Rows,
    objective: str,
    rng: np.random.Generator,
    mask_ratio: float,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Batch:
    """Model inputs and targets of one objective for a set of packed rows.

    With ``world_size > 1`` the batch is this rank's share of the step's global batch: rows
    ``rank, rank + W, ...``.  MLM masks are drawn for the whole global batch and then sliced, so every
    row gets the mask it would get in a single-process run.
    """
    if objective == "clm":
        inputs, labels = rows.tokens, clm_labels(rows.tokens, rows.segments)
    elif objective == "mlm":
        inputs, labels = mlm_inputs(rows.tokens, rng, mask_ratio)
    else:
        raise ValueError(f"objective {objective!r} must be 'clm' or 'mlm'")
    mine = slice(rank, None, world_size)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array[mine]))

    return Batch(
        input_ids=tensor(inputs),
        position_ids=tensor(rows.positions),
        segments=tensor(rows.segments),
        labels=tensor(labels),
    )
