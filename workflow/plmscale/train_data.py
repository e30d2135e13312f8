"""The token streams of a training job, opened in place and verified.

Every rank opens the memory-mapped shards (sizes, shapes and offsets are checked against each manifest
on open).  The sha256 of every shard file is verified once per job, by the first process of each node, in
a background thread while training starts; the trainer checks the result before it writes any checkpoint
or output, so a changed shard never produces a result.  Token ids outside the vocabulary are caught per
batch (:mod:`plmscale.data`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from plmscale.data import PackedStream, make_documents
from plmscale.distributed import DistInfo
from plmscale.settings import TrainJob
from plmscale.tokens import MANIFEST_FILE, TokenStore, concat_stores


def manifest_identity(shard_dirs: tuple[str, ...]) -> dict[str, str]:
    """sha256 of each shard's ``manifest.json`` (it lists the sha256 of the shard's files)."""
    return {d: hashlib.sha256((Path(d) / MANIFEST_FILE).read_bytes()).hexdigest() for d in shard_dirs}


@dataclass
class Verifier:
    """Checks the sha256 of every shard file against its manifest in a background thread."""

    shard_dirs: tuple[str, ...]
    error: BaseException | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Verifier:
        self._thread = threading.Thread(target=self._work, name="plmscale-verify", daemon=True)
        self._thread.start()
        return self

    def _work(self) -> None:
        try:
            for shard in self.shard_dirs:
                TokenStore.open(Path(shard), verify=True)
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


def _stream(shard_dirs: tuple[str, ...], context: int, seed: int, drop_last: bool) -> PackedStream:
    stores = [TokenStore.open(Path(d)) for d in shard_dirs]
    return PackedStream(make_documents(*concat_stores(stores), context), context, seed, drop_last=drop_last)


def open_streams(job: TrainJob, info: DistInfo, log: Callable = print) -> Streams:
    """The train and validation streams of ``job``; checksums verified in the background on local rank 0."""
    run = job.run
    verifier = None
    if info.local_rank == 0:
        verifier = Verifier(job.train_dirs + job.valid_dirs).start()
    return Streams(
        train=_stream(job.train_dirs, run.context, run.seed, drop_last=True),
        valid=_stream(job.valid_dirs, run.context, run.eval_seed, drop_last=False),
        train_identity=manifest_identity(job.train_dirs),
        valid_identity=manifest_identity(job.valid_dirs),
        verifier=verifier,
    )
