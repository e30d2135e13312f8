"""The token streams of a training job, opened in place and verified.

Every rank opens the memory-mapped shards (sizes, shapes and offsets are checked against each manifest
on open) and reads them in place (no copy of the ids).  The contents of every shard (sha256 of both
files, ids in the vocabulary, <cls>/<eos> framing) are verified once per job, by the first process of
each node, in a background thread while training starts, with plain streamed reads; the trainer checks
the result before it writes any checkpoint or output.  Token ids outside the vocabulary are caught per
batch (:mod:`plmscale.data`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from plmscale.data import PackedStream
from plmscale.distributed import DistInfo
from plmscale.settings import TrainJob
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
    train: PackedStream
    valid: PackedStream
    train_identity: dict[str, str]
    valid_identity: dict[str, str]
    verifier: Verifier | None

    def check_verified(self) -> None:
        if self.verifier is not None:
            self.verifier.check()


def open_streams(job: TrainJob, info: DistInfo, log: Callable = print) -> Streams:
    """The train and validation streams of ``job``; contents verified in the background on local rank 0."""
    run = job.run
    train_stores = open_stores(job.train_dirs, checksum=False)
    valid_stores = open_stores(job.valid_dirs, checksum=False)
    verifier = Verifier(train_stores + valid_stores).start() if info.local_rank == 0 else None
    return Streams(
        train=PackedStream.from_stores(train_stores, run.context, run.seed, drop_last=True),
        valid=PackedStream.from_stores(valid_stores, run.context, run.eval_seed, drop_last=False),
        train_identity=store_identity(train_stores),
        valid_identity=store_identity(valid_stores),
        verifier=verifier,
    )
