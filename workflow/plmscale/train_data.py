"""The token streams of a training job, opened in place and verified.

Every rank opens the memory-mapped shards (sizes, shapes and offsets are checked against each manifest
on open) and reads them in place (no copy of the ids).  The contents of every shard (sha256 of both
files, ids in the vocabulary, <cls>/<eos> framing) are verified once per job, by the first process of
each node, in a background thread while training starts, with plain streamed reads; the trainer checks
the result before it writes any checkpoint or output.  Token ids outside the vocabulary are caught per
batch (:mod:`plmscale.data`).

A repetition run (``run.unique_tokens`` set) trains on a fixed, seeded subset of the training documents
(:func:`plmscale.data.subset_documents`) repeated over its epochs: the concatenated stream is capped to
``unique_tokens`` tokens, a mixed stream caps each source to ``round(proportion * unique_tokens)``.  Every
count the trainer derives from the streams (``train_tokens``, ``source_tokens``, hence ``epochs`` in
done.json and the per-source usage checked against ``max_epochs``) is then of the capped data.  The shards
are still opened, identified and verified whole: the subset is a pure function of them, the context, the
seed and ``unique_tokens`` (which is part of the run's settings).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from plmscale.data import PackedStream, store_documents, subset_documents
from plmscale.distributed import DistInfo
from plmscale.mixing import MixedStream, SourceUse
from plmscale.settings import TrainJob, TrainSource
from plmscale.tokens import TokenStore, open_stores, store_identity, verify_store


@dataclass
class Verifier:
    """Verifies every shard's contents against its manifest in a background thread."""

    stores: list[TokenStore]
    error: BaseException | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Verifier:
        self._thread = threading.Thread(target=self._work, name="plmscale-verify", daemon=True)
        self._thread.start()
        return self

    def _work(self) -> None:
        try:
            for store in self.stores:
                verify_store(store)
        except BaseException as err:
            self.error = err

    def check(self) -> None:
        """Wait for the verification and raise what it found."""
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise ValueError(f"token shard verification failed: {self.error}") from self.error


@dataclass
class Streams:
    train: PackedStream | MixedStream
    valid: PackedStream
    train_identity: dict[str, str]
    valid_identity: dict[str, str]
    verifier: Verifier | None
    train_tokens: int  # tokens of one pass over the training data (the capped subset in a repetition run)
    source_tokens: dict[str, int]  # per source ("all" for a job without sources), capped likewise
    # repetition run: the unique training tokens kept (>= run.unique_tokens, by less than one document per
    # source: documents are never cut); None = the whole train split
    unique_tokens: int | None = None

    def check_verified(self) -> None:
        if self.verifier is not None:
            self.verifier.check()

    @property
    def mixture(self) -> dict[str, float]:
        """The configured proportions ({} when sources are concatenated): part of the run's identity."""
        if isinstance(self.train, MixedStream):
            return dict(zip(self.train.names, self.train.proportions, strict=True))
        return {}

    def usage(self, total_rows: int, max_epochs: Mapping[str, float | None]) -> list[SourceUse]:
        """What ``total_rows`` training rows take from each source.

        In a repetition run the epochs are passes over the capped data (about ``D / unique_tokens``), and
        :func:`plmscale.mixing.check_repetition` holds them to each source's ``max_epochs`` like any other
        run: ``max_epochs`` bounds the passes over the tokens a run actually trains on.  A repetition grid
        that repeats a source beyond its ``max_epochs`` needs that limit raised (or null) or
        ``train.on_over_repeat: warn``.
        """
        if isinstance(self.train, MixedStream):
            return self.train.usage(total_rows, max_epochs)
        epochs = total_rows / self.train.rows_per_epoch  # concatenated: every source repeated alike
        context = self.train.context
        return [
            SourceUse(name, tokens / self.train_tokens, round(total_rows * tokens / self.train_tokens),
                      round(total_rows * context * tokens / self.train_tokens), epochs, max_epochs.get(name))
            for name, tokens in sorted(self.source_tokens.items())
        ]  # fmt: skip


def _capped_stream(stores: list[TokenStore], cap: int, job: TrainJob, what: str) -> PackedStream:
    """The packed stream of ``stores`` capped to ``cap`` unique tokens; errors name ``what`` was capped."""
    run = job.run
    try:
        docs = subset_documents(store_documents(stores, run.context), cap, run.seed)
        return PackedStream(docs, run.context, run.seed, drop_last=True)
    except ValueError as err:
        raise ValueError(f"run {job.run_id}, {what}: {err}") from err


def _capped_concatenation(
    job: TrainJob, stores: list[TokenStore], sources: tuple[TrainSource, ...]
) -> tuple[PackedStream, dict[str, int]]:
    """The concatenated stream capped to ``run.unique_tokens`` and the capped tokens of each source."""
    stream = _capped_stream(stores, job.run.unique_tokens, job, "training data")
    docs = stream.documents
    part = np.searchsorted(docs.bases, docs.starts, side="right") - 1  # the store of each kept document
    per_store = np.zeros(len(stores), dtype=np.int64)
    np.add.at(per_store, part, docs.lengths)
    index = {str(d): i for i, d in enumerate(job.train_dirs)}
    return stream, {s.name: sum(int(per_store[index[str(d)]]) for d in s.dirs) for s in sources}


def _train_stream(
    job: TrainJob, stores: list[TokenStore]
) -> tuple[PackedStream | MixedStream, dict[str, int]]:
    """The training stream and the tokens of one pass over each source (capped in a repetition run)."""
    run = job.run
    by_dir = {str(d): store for d, store in zip(job.train_dirs, stores, strict=True)}
    sources = job.sources or (TrainSource("all", job.train_dirs),)
    tokens = {s.name: sum(by_dir[str(d)].num_tokens for d in s.dirs) for s in sources}
    if not all(s.proportion is not None for s in sources):
        if run.unique_tokens is not None:
            return _capped_concatenation(job, stores, sources)
        return PackedStream.from_stores(stores, run.context, run.seed, drop_last=True), tokens
    empty = [name for name, n in tokens.items() if n == 0]
    if empty:
        raise ValueError(
            f"training sources {empty} have no tokens in the train split but a proportion > 0; give them "
            "data or remove them from the config"
        )
    if run.unique_tokens is not None:
        u = run.unique_tokens
        streams = {}
        for s in sources:
            what = f"training source {s.name!r} (proportion {s.proportion:g} of unique_tokens={u:,})"
            cap = round(float(s.proportion) * u)
            streams[s.name] = _capped_stream([by_dir[str(d)] for d in s.dirs], cap, job, what)
        tokens = {name: stream.total for name, stream in streams.items()}
        return MixedStream(streams, {s.name: float(s.proportion) for s in sources}), tokens
    streams = {
        s.name: PackedStream.from_stores([by_dir[str(d)] for d in s.dirs], run.context, run.seed)
        for s in sources
    }
    return MixedStream(streams, {s.name: float(s.proportion) for s in sources}), tokens


def open_streams(job: TrainJob, info: DistInfo, log: Callable = print) -> Streams:
    """The train and validation streams of ``job``; contents verified in the background on local rank 0.

    With per-source proportions the training stream mixes the sources (:class:`MixedStream`); without,
    it is their concatenation.  The validation stream is always the concatenation of the valid shards.
    A repetition run's training stream is capped to ``run.unique_tokens`` (module docstring); the
    validation stream never is."""
    run = job.run
    train_stores = open_stores(job.train_dirs, checksum=False)
    valid_stores = open_stores(job.valid_dirs, checksum=False)
    verifier = Verifier(train_stores + valid_stores).start() if info.local_rank == 0 else None
    train, source_tokens = _train_stream(job, train_stores)
    total = sum(store.num_tokens for store in train_stores)
    unique = None if run.unique_tokens is None else sum(source_tokens.values())
    if unique is not None:
        log(
            f"repetition: training on {unique:,} unique tokens (cap {run.unique_tokens:,}) of the {total:,} "
            f"in the train split, {unique / total:.3g} of it"
        )
    return Streams(
        train=train,
        valid=PackedStream.from_stores(valid_stores, run.context, run.eval_seed, drop_last=False),
        train_identity=store_identity(train_stores),
        valid_identity=store_identity(valid_stores),
        verifier=verifier,
        train_tokens=total if unique is None else unique,
        source_tokens=source_tokens,
        unique_tokens=unique,
    )
