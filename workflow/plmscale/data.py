"""Sequence packing into fixed-length rows, attention masks and objective targets.

Every sequence (``<cls> residues <eos>``) is cut into consecutive *documents* of at most ``context``
tokens (a long protein yields several windows, so no residue is thrown away).  Per epoch, documents
are shuffled by a permutation that depends only on ``(seed, epoch)`` and concatenated into a stream
that is cut into rows of exactly ``context`` tokens.  Inside a row, attention is blocked across
document boundaries (block-diagonal mask, causal within a document for CLM) and position ids restart
at each document.  Row ``r`` of the stream, and hence the batch of step ``s``, is a pure function of
``(seed, r)``: a resumed run sees exactly the batches an uninterrupted run would.

Documents reference the token stores in place: :func:`store_documents` windows several memory-mapped
:class:`~plmscale.tokens.TokenStore` shards as one *virtual* concatenation (a base offset per store), so
the documents, their order and therefore every row are exactly those of concatenating the stores in the
given order (:func:`~plmscale.tokens.concat_stores`), without copying the ids into memory.
:meth:`PackedStream.rows` builds a block of rows with numpy alone (searchsorted over the epoch's cumulative
document ends, one fancy-indexed gather per store) and reads from the memory maps only the tokens of the
rows asked for, unmapping them again afterwards (``release_pages``, so resident memory stays at one
block's pages however large the stores); it checks every gathered id against the vocabulary and names the
shard, sequence and fix for one that is not.

A repetition run (data-constrained scaling, Muennighoff et al. 2023) trains on a fixed subset of the
documents, repeated over its epochs: :func:`subset_documents` picks it in a seeded order independent of the
epoch, and the :class:`PackedStream` over the subset shuffles and packs it per epoch exactly as above.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from plmscale.model import POSITION_OFFSET
from plmscale.tokens import (
    CLS_ID,
    EOS_ID,
    IDS_FILE,
    MASK_ID,
    PAD_ID,
    VOCAB_SIZE,
    TokenStore,
    retokenize_hint,
)

IGNORE_INDEX = -100
# ids of the 20 standard amino acids in the ESM-2 vocabulary (L A G V S E R T I D P K Q N F Y M H W C)
STANDARD_RESIDUE_IDS = np.arange(4, 24)
_CACHED_EPOCHS = 2  # epoch layouts kept: a block crossing an epoch boundary needs two
# rows built per vectorised pass: keeps the temporaries in cache and, with release_pages, bounds the pages
# mapped at once to one pass's documents (measured fastest at 32-128 rows of 1024 tokens)
_PASS_ROWS = 64
# second seed word of the document subset's order (``b"unique"`` as an integer): above 2**32, so its seed
# sequence [seed, low word, high word] never equals an epoch layout's [seed, epoch]
SUBSET_TAG = int.from_bytes(b"unique", "big")


@dataclass(frozen=True)
class Documents:
    """Windows of at most ``context`` tokens over one or more token arrays, virtually concatenated.

    ``starts`` index the concatenation of ``parts`` in order (``bases[i]`` is where part ``i`` begins), so
    they equal the starts over :func:`~plmscale.tokens.concat_stores`'s array; a document never crosses a
    part.  ``parts`` are the stores' memory maps (not copied); ``offsets`` and ``names`` (the file each
    part was read from) only serve error messages.
    """

    parts: tuple[np.ndarray, ...]  # uint8 ids of each part (memory maps stay memory maps)
    offsets: tuple[np.ndarray, ...]  # int64 sequence offsets within each part
    names: tuple[str, ...]  # the ids file of each part, for error messages
    bases: np.ndarray  # int64, len(parts) + 1: start of each part in the virtual concatenation
    starts: np.ndarray  # int64, start of each document in the virtual concatenation
    lengths: np.ndarray  # int64, tokens in each document (1..context)

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


def _windows(offsets: np.ndarray, context: int, base: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts + ``base``, lengths) of the windows of at most ``context`` tokens of each sequence."""
    offsets = np.asarray(offsets, dtype=np.int64)
    seq_lengths = np.diff(offsets)
    if np.any(seq_lengths <= 0):
        raise ValueError("token store contains an empty sequence; re-run validation and tokenization")
    if seq_lengths.size == 0 or int(seq_lengths.max()) <= context:  # one window per sequence
        return offsets[:-1] + base, seq_lengths
    n_windows = -(-seq_lengths // context)
    seq_of_window = np.repeat(np.arange(len(seq_lengths)), n_windows)
    first_window = np.cumsum(n_windows) - n_windows
    window_in_seq = np.arange(int(n_windows.sum())) - np.repeat(first_window, n_windows)
    starts = offsets[:-1][seq_of_window] + window_in_seq * context
    ends = np.minimum(starts + context, offsets[1:][seq_of_window])
    return starts + base, ends - starts


def _documents(parts: Sequence[tuple[np.ndarray, np.ndarray, str]], context: int) -> Documents:
    """Documents of (ids, offsets, name) parts, virtually concatenated in order."""
    if context < 2:
        raise ValueError(f"context={context} must be at least 2 tokens")
    bases = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([int(ids.size) for ids, _, _ in parts], out=bases[1:])
    windows = [_windows(offsets, context, int(bases[i])) for i, (_, offsets, _) in enumerate(parts)]
    empty = np.empty(0, dtype=np.int64)
    starts, lengths = windows[0] if len(windows) == 1 else (empty, empty)
    if len(windows) > 1:
        starts, lengths = (np.concatenate(arrays) for arrays in zip(*windows, strict=True))
    return Documents(
        parts=tuple(ids for ids, _, _ in parts),
        offsets=tuple(offsets for _, offsets, _ in parts),
        names=tuple(name for _, _, name in parts),
        bases=bases,
        starts=starts,
        lengths=lengths,
    )


def make_documents(ids: np.ndarray, offsets: np.ndarray, context: int) -> Documents:
    """Cut each sequence ``ids[offsets[i]:offsets[i+1]]`` into windows of at most ``context`` tokens."""
    return _documents([(ids, offsets, "<token array>")], context)


def store_documents(stores: Sequence[TokenStore], context: int) -> Documents:
    """Documents of several stores read in place, identical to ``make_documents(*concat_stores(stores))``.

    Only the per-sequence offsets are read (into the per-document ``starts``/``lengths``); the token ids
    stay in the stores' memory maps.
    """
    return _documents([(s.ids, s.offsets, os.fspath(s.directory / IDS_FILE)) for s in stores], context)


def subset_documents(docs: Documents, max_tokens: int, seed: int) -> Documents:
    """The documents of a repetition run capped to ``max_tokens`` unique tokens.

    Documents are taken in a fixed order, the permutation of ``numpy.random.default_rng([seed,
    SUBSET_TAG])`` (independent of the epoch and of ``max_tokens``), and the subset is the shortest prefix of
    that order holding at least ``max_tokens`` tokens: documents are never cut, so the subset overshoots
    ``max_tokens`` by less than one document (at most ``context - 1`` tokens); its ``num_tokens`` is the
    exact count.  A larger cap with the same seed gives a superset (the repetition levels of one seed are
    nested).  The result keeps ``parts``/``offsets``/``names``/``bases`` and the chosen ``starts``/``lengths``
    in their original index order, so :class:`PackedStream` shuffles it per epoch as any other documents.

    Raises ``ValueError`` when ``max_tokens < 1`` or ``max_tokens >= docs.num_tokens`` (the run would repeat
    nothing: the whole data holds no more tokens than the cap).
    """
    total = docs.num_tokens
    if max_tokens < 1:
        raise ValueError(f"unique_tokens={max_tokens} must be at least 1")
    if max_tokens >= total:
        raise ValueError(
            f"unique_tokens={max_tokens:,} is not below the {total:,} tokens of the training data, so the "
            "run would repeat nothing; raise that run's grid.repetition epochs (unique tokens = D / epochs) "
            "or use more training data"
        )
    order = np.random.default_rng([seed, SUBSET_TAG]).permutation(len(docs.lengths))
    ends = np.cumsum(docs.lengths[order])
    count = int(np.searchsorted(ends, max_tokens, side="left")) + 1  # first prefix with >= max_tokens
    keep = np.sort(order[:count])
    return replace(docs, starts=docs.starts[keep], lengths=docs.lengths[keep])


@dataclass(frozen=True)
class Rows:
    """A batch of packed rows (numpy, int64, shape ``(rows, context)``)."""

    tokens: np.ndarray
    positions: np.ndarray
    segments: np.ndarray  # document index within the row; -1 marks padding


def _ranges(lo: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(lo[i], lo[i] + n[i])`` over ``i``, without a Python loop."""
    ends = np.cumsum(n)
    return np.arange(int(ends[-1]) if ends.size else 0, dtype=np.int64) + np.repeat(lo - (ends - n), n)


def _out_of_vocab(docs: Documents, part: int, local: int, token: int) -> ValueError:
    """The error for token id ``token`` at ``local`` in part ``part``: file, sequence, position, fix."""
    offsets = docs.offsets[part]
    seq = int(np.searchsorted(offsets, local, side="right")) - 1
    name = docs.names[part]
    return ValueError(
        f"{name}: token id {token} at position {local - int(offsets[seq])} of sequence {seq} is outside the "
        f"{VOCAB_SIZE}-token vocabulary; the shard is corrupt. {retokenize_hint(os.path.dirname(name))}"
    )


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    """The read-only ``mmap`` an array views (``np.load(..., mmap_mode="r")``), or None."""
    base: object = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, mmap.mmap) and not array.flags.writeable else None


def _release(array: np.ndarray) -> None:
    """Unmap from this process the pages of a read-only memory map that were read (``MADV_DONTNEED``).

    The file's pages stay in the page cache, so reading them again is a minor fault; the process's RSS
    then holds only the pages of the pass being built.  Without this, every page read stays mapped (and
    kernels that cache files in large folios map up to 2 MiB per document read), so a long run's RSS would
    creep towards the size of the store.
    """
    mapping = _mapping(array)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def _read(docs: Documents, part: int, src: np.ndarray) -> np.ndarray:
    """Tokens ``src`` (positions in ``part``) as uint8, checked against the vocabulary."""
    values = np.asarray(docs.parts[part][src])
    if values.size and int(values.max()) >= VOCAB_SIZE:
        bad = int(np.argmax(values >= VOCAB_SIZE))
        raise _out_of_vocab(docs, part, int(src[bad]), int(values[bad]))
    return values


def _gather(
    docs: Documents, shift: np.ndarray, lo: np.ndarray, n: np.ndarray, piece: np.ndarray, out: np.ndarray
) -> list[int]:
    """Fill ``out[:len(piece)]``: output token ``i`` of piece ``j = piece[i]`` (``lo[j] <= i < lo[j] + n[j]``)
    is virtual token ``i + shift[j]``.  One fancy-indexed gather per part (store) the pieces come from;
    returns those parts."""
    part_of = np.searchsorted(docs.bases, shift + lo, side="right") - 1
    local = shift - docs.bases[part_of]  # piece shift within its own part
    if part_of[0] == part_of[-1] and (part_of == part_of[0]).all():  # one store: contiguous output
        out[: piece.size] = _read(docs, int(part_of[0]), np.arange(piece.size) + local[piece])
        return [int(part_of[0])]
    by_part = np.argsort(part_of, kind="stable")  # pieces grouped by part, in output order within each
    dst = _ranges(lo[by_part], n[by_part])
    src = dst + np.repeat(local[by_part], n[by_part])
    parts = part_of[by_part]
    first = np.flatnonzero(np.diff(parts)) + 1  # first piece of each part group after the first
    bounds = np.concatenate(([0], np.cumsum(n[by_part])[first - 1], [dst.size])).tolist()
    touched = parts[np.concatenate(([0], first))].tolist()
    for part, a, b in zip(touched, bounds, bounds[1:], strict=False):
        out[dst[a:b]] = _read(docs, part, src[a:b])
    return touched


class PackedStream:
    """The epoch-shuffled, packed token stream of a set of documents (see module docstring).

    Thread-safe: a background thread may build rows (:class:`plmscale.loader.Prefetcher`).
    """

    def __init__(
        self,
        documents: Documents,
        context: int,
        seed: int,
        *,
        drop_last: bool = True,
        release_pages: bool = True,
    ) -> None:
        if documents.num_tokens == 0:
            raise ValueError("cannot pack an empty token store")
        self.documents = documents
        self.context = context
        self.seed = seed
        self.release_pages = release_pages
        self.total = documents.num_tokens
        self.rows_per_epoch = self.total // context if drop_last else -(-self.total // context)
        if self.rows_per_epoch == 0:
            raise ValueError(
                f"the token store holds {self.total} tokens, fewer than one row of context={context}; "
                "use a smaller context or more data"
            )
        self._lock = threading.Lock()
        self._layouts: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_stores(
        cls,
        stores: Sequence[TokenStore],
        context: int,
        seed: int,
        *,
        drop_last: bool = True,
        release_pages: bool = True,
    ) -> PackedStream:
        """The stream over :func:`store_documents` of ``stores`` (ids read in place)."""
        docs = store_documents(stores, context)
        return cls(docs, context, seed, drop_last=drop_last, release_pages=release_pages)

    def _layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(document order, cumulative ends of the ordered documents) of ``epoch``; cached per epoch."""
        with self._lock:
            layout = self._layouts.get(epoch)
            if layout is None:
                order = np.random.default_rng([self.seed, epoch]).permutation(len(self.documents.lengths))
                layout = (order, np.cumsum(self.documents.lengths[order]))
                self._layouts[epoch] = layout
                while len(self._layouts) > _CACHED_EPOCHS:
                    del self._layouts[max(self._layouts, key=lambda e: abs(e - epoch))]
            return layout

    def _fill(self, epoch: int, first: int, out: Rows) -> list[int]:
        """Fill ``out`` (rows ``first ..`` of ``epoch``, all in that epoch); return the parts read."""
        order, ends = self._layout(epoch)
        t, docs = self.context, self.documents
        p0 = first * t
        real = min(out.tokens.size, self.total - p0)  # real tokens of the block; the rest is padding
        k0 = int(np.searchsorted(ends, p0, side="right"))
        k1 = int(np.searchsorted(ends, p0 + real - 1, side="right")) + 1
        doc = order[k0:k1]
        begin = ends[k0:k1] - docs.lengths[doc] - p0  # document starts, relative to the block
        lo = np.maximum(begin, 0)  # the documents' pieces partition [0, real) in order
        n = np.diff(lo, append=real)
        tokens, positions, segments = (a.reshape(-1) for a in (out.tokens, out.positions, out.segments))
        piece = np.repeat(np.arange(k1 - k0), n)  # the document piece of each real token
        touched = _gather(docs, docs.starts[doc] - begin, lo, n, piece, tokens)
        positions[:real] = np.arange(POSITION_OFFSET, POSITION_OFFSET + real) - begin[piece]
        segments[:real] = piece - piece[::t].repeat(t)[:real]
        return touched

    def rows(self, first: int, count: int) -> Rows:
        """Rows ``first .. first + count - 1`` of the stream (epochs follow each other), built vectorised.

        Row ``r`` is row ``r % rows_per_epoch`` of epoch ``r // rows_per_epoch``; padding (only in the last
        row of an epoch with ``drop_last=False``) has token ``PAD_ID``, position ``POSITION_OFFSET`` and
        segment -1.  Raises ``ValueError`` naming the shard and sequence of an out-of-vocabulary id.
        """
        if first < 0 or count < 0:
            raise ValueError(f"rows(first={first}, count={count}): both must be >= 0")
        t = self.context
        out = Rows(
            tokens=np.full((count, t), PAD_ID, dtype=np.int64),
            positions=np.full((count, t), POSITION_OFFSET, dtype=np.int64),
            segments=np.full((count, t), -1, dtype=np.int64),
        )
        done = 0
        while done < count:  # passes of at most _PASS_ROWS rows, none crossing an epoch boundary
            epoch, local = divmod(first + done, self.rows_per_epoch)
            take = min(count - done, self.rows_per_epoch - local, _PASS_ROWS)
            block = Rows(*(a[done : done + take] for a in (out.tokens, out.positions, out.segments)))
            touched = self._fill(epoch, local, block)
            if self.release_pages:
                for part in touched:
                    _release(self.documents.parts[part])
            done += take
        return out

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokens, positions and segment ids of global row ``index`` (epochs follow each other)."""
        one = self.rows(index, 1)
        return one.tokens[0], one.positions[0], one.segments[0]


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
