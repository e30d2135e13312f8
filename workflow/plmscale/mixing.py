"""Training rows drawn from several sources in fixed proportions, deterministic in the row index.

Each source has its own packed stream (:class:`plmscale.data.PackedStream`: its own epochs and document
shuffle).  The global row sequence interleaves them like a merge of evenly spaced events: with integer
weights ``W_i`` (the proportions in millionths), row ``k`` of source ``i`` sits at time
``(k + 1/2) / W_i``, and the global rows are all sources' rows in time order (ties: lower source index
first).  Hence

* any prefix of ``R`` global rows holds ``R * p_i`` rows of source ``i`` within one row per source (the
  mixture is exact at every step, not only on average), and consecutive rows of one source are spread
  evenly through every batch;
* the source and within-source row of global row ``r`` are a pure function of ``r`` (integer arithmetic,
  no state): a resumed run sees exactly the rows an uninterrupted one would, and every process of a
  multi-process run computes the same mapping;
* the rows consumed from each source after ``R`` global rows, hence its epochs, are known before training
  starts (:meth:`MixedStream.source_rows`), so a run that would repeat a source more than its
  ``max_epochs`` is refused (or warned about) at start, not discovered at the end.

This is the stream the paper's sampling proportions describe (UniMeta200B: 8.5 / 19.5 / 19.5 / 52.5 %);
the interleave itself is our choice (deterministic, exact per batch) where the paper's loader is not
documented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from plmscale.data import PackedStream, Rows
from plmscale.model import POSITION_OFFSET
from plmscale.tokens import PAD_ID

WEIGHT_SCALE = 1_000_000  # proportions are resolved to millionths


def weights_of(proportions: Sequence[float]) -> np.ndarray:
    """Integer weights (millionths) of proportions that sum to 1; ``ValueError`` naming the fix."""
    total = float(sum(proportions))
    if not proportions or abs(total - 1.0) > 1e-6 or min(proportions) <= 0:
        raise ValueError(
            f"source proportions {list(proportions)} must be positive and sum to 1 (they sum to {total:g}); "
            "fix the `proportion` of each source"
        )
    weights = np.array([round(p * WEIGHT_SCALE) for p in proportions], dtype=np.int64)
    if (weights == 0).any():
        raise ValueError(
            f"a source proportion in {list(proportions)} is below 1e-6; raise it or drop the source"
        )
    return weights


def global_rows(weights: np.ndarray, source: int, k: np.ndarray) -> np.ndarray:
    """Global index of rows ``k`` (int64 array) of ``source``: the number of rows of all sources before it.

    Source ``j`` has ``#{k' : (2k'+1) W_i <= (2k+1) W_j}`` rows before row ``k`` of source ``i`` when
    ``j < i`` (ties go to the lower index), ``<`` when ``j > i``, and ``k`` when ``j = i``.
    """
    k = np.asarray(k, dtype=np.int64)
    w_i = int(weights[source])
    total = k.copy()
    for j, w_j in enumerate(weights.tolist()):
        if j == source:
            continue
        numerator = (2 * k + 1) * w_j - w_i
        count = numerator // (2 * w_i) + 1 if j < source else -((-numerator) // (2 * w_i))
        total += np.maximum(count, 0)
    return total


@dataclass(frozen=True)
class SourceUse:
    """What a run takes from one source."""

    name: str
    proportion: float
    rows: int
    num_tokens: int  # rows x context
    epochs: float  # rows / the source's rows per epoch
    max_epochs: float | None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "proportion": self.proportion,
            "rows": self.rows,
            "num_tokens": self.num_tokens,
            "epochs": self.epochs,
            "max_epochs": self.max_epochs,
        }


class MixedStream:
    """The training rows of several sources mixed by proportion (see the module docstring).

    Offers what the trainer uses of a :class:`PackedStream`: ``context`` and ``rows(first, count)``.
    """

    def __init__(self, streams: Mapping[str, PackedStream], proportions: Mapping[str, float]) -> None:
        if set(streams) != set(proportions):
            raise ValueError(f"streams {sorted(streams)} and proportions {sorted(proportions)} differ")
        self.names = tuple(sorted(streams))
        self.streams = tuple(streams[name] for name in self.names)
        self.proportions = tuple(float(proportions[name]) for name in self.names)
        self.weights = weights_of(self.proportions)
        contexts = {stream.context for stream in self.streams}
        if len(contexts) != 1:
            raise ValueError(f"all sources must be packed to one context, got {sorted(contexts)}")
        self.context = contexts.pop()

    @property
    def rows_per_epoch(self) -> int:
        """Rows of one pass over every source (for logs; each source has its own epochs)."""
        return sum(stream.rows_per_epoch for stream in self.streams)

    def _window(self, source: int, first: int, stop: int) -> np.ndarray:
        """Candidate within-source rows whose global index may fall in ``[first, stop)``."""
        w, total, margin = int(self.weights[source]), int(self.weights.sum()), len(self.names) + 2
        lo = max(0, first * w // total - margin)
        hi = -(-stop * w // total) + margin
        return np.arange(lo, hi, dtype=np.int64)

    def locate(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, row within the source) of global rows ``first .. first + count - 1``."""
        stop = first + count
        source = np.full(count, -1, dtype=np.int64)
        local = np.zeros(count, dtype=np.int64)
        for i in range(len(self.names)):
            k = self._window(i, first, stop)
            g = global_rows(self.weights, i, k)
            inside = (g >= first) & (g < stop)
            assert not (source[g[inside] - first] >= 0).any(), "two sources claim one row"
            source[g[inside] - first] = i
            local[g[inside] - first] = k[inside]
        assert (source >= 0).all(), "a row belongs to no source"
        return source, local

    def source_rows(self, total_rows: int) -> dict[str, int]:
        """Rows taken from each source by the first ``total_rows`` global rows."""
        out = {}
        for i, name in enumerate(self.names):
            k = self._window(i, total_rows, total_rows)
            g = global_rows(self.weights, i, k)
            out[name] = int(k[0]) + int((g < total_rows).sum()) if k.size else 0
        assert sum(out.values()) == total_rows
        return out

    def rows(self, first: int, count: int) -> Rows:
        """Global rows ``first .. first + count - 1``, each built by its source's stream."""
        t = self.context
        out = Rows(
            tokens=np.full((count, t), PAD_ID, dtype=np.int64),
            positions=np.full((count, t), POSITION_OFFSET, dtype=np.int64),
            segments=np.full((count, t), -1, dtype=np.int64),
        )
        if count == 0:
            return out
        source, local = self.locate(first, count)
        for i, stream in enumerate(self.streams):
            where = np.flatnonzero(source == i)
            if where.size == 0:
                continue
            k0 = int(local[where[0]])
            assert (local[where] == np.arange(k0, k0 + where.size)).all()
            part = stream.rows(k0, where.size)
            out.tokens[where], out.positions[where], out.segments[where] = (
                part.tokens,
                part.positions,
                part.segments,
            )
        return out

    def usage(self, total_rows: int, max_epochs: Mapping[str, float | None]) -> list[SourceUse]:
        """What ``total_rows`` global rows take from each source."""
        taken = self.source_rows(total_rows)
        return [
            SourceUse(
                name=name,
                proportion=p,
                rows=taken[name],
                num_tokens=taken[name] * self.context,
                epochs=taken[name] / stream.rows_per_epoch,
                max_epochs=max_epochs.get(name),
            )
            for name, p, stream in zip(self.names, self.proportions, self.streams, strict=True)
        ]


def check_repetition(uses: Sequence[SourceUse], policy: str, log=print) -> None:
    """Refuse (``policy == "error"``) or warn about a run that repeats a source beyond its ``max_epochs``."""
    over = [u for u in uses if u.max_epochs is not None and u.epochs > u.max_epochs]
    for use in uses:
        log(
            f"source {use.name}: proportion {use.proportion:.4g}, {use.rows:,} rows = {use.num_tokens:,} "
            f"tokens = {use.epochs:.3g} epochs (max_epochs {use.max_epochs})"
        )
    if not over:
        return
    text = "; ".join(
        f"{u.name} would be repeated {u.epochs:.3g} epochs > max_epochs {u.max_epochs:g}" for u in over
    )
    message = (
        f"{text}. Fix: add data to the source, lower its proportion, shrink the budget, raise its "
        "max_epochs, or set train.on_over_repeat: warn"
    )
    if policy == "error":
        raise ValueError(message)
    log(f"WARNING: {message}")
