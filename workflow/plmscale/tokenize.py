"""Tokenize one shard of a split FASTA into a token store, streamed, in memory that does not grow with it;
or all shards of one (split, source) FASTA, several at a time (:func:`tokenize_source`).

A shard is a contiguous record range of its FASTA (:func:`plmscale.fasta_index.shard_range`): the job
seeks to it through the FASTA's sparse index and reads only its part.  Records are encoded in chunks of
about ``chunk_residues`` residues (:func:`plmscale.tokens.encode`) and appended to ``ids.npy`` and
``offsets.npy``, whose ``.npy`` headers (fixed at 128 bytes) are rewritten with the final length at the
end.  The files and the manifest (written last) follow the store format of :mod:`plmscale.tokens`.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from plmscale.atomic import atomic_path, sha256_file, write_json_atomic
from plmscale.fasta_index import FastaIndex, index_path, read_record_range, shard_range
from plmscale.tokens import (
    ESM2_VOCAB,
    FORMAT,
    IDS_FILE,
    MANIFEST_FILE,
    OFFSETS_FILE,
    InvalidResidueError,
    encode,
)
from plmscale.validate import ESM_RESIDUES

__all__ = ["NpyAppender", "tokenize_shard", "tokenize_source"]

_HEADER_BYTES = 128
CHUNK_RESIDUES = 1 << 22


class NpyAppender:
    """A 1-D ``.npy`` file (format 1.0) written by appends, its length fixed in the header at the end."""

    def __init__(self, handle: BinaryIO, dtype: np.dtype | type) -> None:
        self.handle, self.dtype, self.length = handle, np.dtype(dtype), 0
        handle.write(b"\0" * _HEADER_BYTES)

    def append(self, array: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        self.length += int(array.size)

    def finish(self) -> None:
        """Write the header (magic, version 1.0, dict padded with spaces to 128 bytes; NEP 1)."""
        text = f"{{'descr': '{self.dtype.str}', 'fortran_order': False, 'shape': ({self.length},), }}"
        body = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
        header = b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")
        assert len(header) == _HEADER_BYTES
        self.handle.seek(0)
        self.handle.write(header)
        self.handle.seek(0, os.SEEK_END)


def _encode_chunk(fasta: Path, ids: list[str], seqs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    try:
        return encode(seqs)
    except InvalidResidueError as err:
        raise ValueError(
            f"{fasta}: record {ids[err.index]!r}: {err.char!r} at position {err.position} is not an ESM-2 "
            f"residue ({ESM_RESIDUES}). Fix: tokenize the output of plmscale.validate."
        ) from err


class _ShardState:
    """What the streamed shard accumulates: counts, lengths, the ID digest."""

    def __init__(self) -> None:
        self.sequences = self.tokens = 0
        self.min_length, self.max_length = 0, 0
        self.id_digest = hashlib.sha256()

    def add(self, ids: list[str], offsets: np.ndarray) -> None:
        lengths = np.diff(offsets)
        first = self.sequences == 0
        self.min_length = int(lengths.min()) if first else min(self.min_length, int(lengths.min()))
        self.max_length = max(self.max_length, int(lengths.max()))
        self.id_digest.update((("" if first else "\n") + "\n".join(ids)).encode("utf-8"))
        self.sequences += len(ids)
        self.tokens += int(offsets[-1])


def _write_arrays(fasta: Path, out_dir: Path, first: int, stop: int, chunk_residues: int) -> _ShardState:
    state = _ShardState()
    with (
        atomic_path(out_dir / IDS_FILE) as ids_tmp,
        atomic_path(out_dir / OFFSETS_FILE) as offsets_tmp,
        open(ids_tmp, "wb") as ids_handle,
        open(offsets_tmp, "wb") as offsets_handle,
    ):
        ids_file, offsets_file = NpyAppender(ids_handle, np.uint8), NpyAppender(offsets_handle, np.int64)
        offsets_file.append(np.zeros(1, dtype=np.int64))
        names: list[str] = []
        seqs: list[str] = []
        residues = 0

        def flush() -> None:
            ids, offsets = _encode_chunk(fasta, names, seqs)
            ids_file.append(ids)
            offsets_file.append(offsets[1:] + state.tokens)
            state.add(names, offsets)
            names.clear()
            seqs.clear()

        for record_id, sequence in read_record_range(fasta, first, stop):
            if not sequence:
                raise ValueError(
                    f"{fasta}: record {record_id!r} is empty; refusing to store a sequence of only "
                    "<cls><eos>. Fix: tokenize the output of plmscale.validate."
                )
            names.append(record_id)
            seqs.append(sequence)
            residues += len(sequence)
            if residues >= chunk_residues:
                flush()
                residues = 0
        if names:
            flush()
        ids_file.finish()
        offsets_file.finish()
    return state


def tokenize_shard(
    fasta_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    shard_index: int,
    num_shards: int,
    chunk_residues: int = CHUNK_RESIDUES,
) -> dict[str, Any]:
    """Tokenize records ``shard_range(n, shard_index, num_shards)`` of an indexed, validated FASTA.

    Writes ``ids.npy``, ``offsets.npy`` and ``manifest.json`` (last) atomically into ``out_dir`` and returns
    the manifest.  A shard of no records (a small source in a small split) is a valid, empty store.
    Raises ``ValueError`` for a bad shard index or an invalid residue (naming the file, record and
    character).
    """
    fasta_path, out_dir = Path(fasta_path), Path(out_dir)
    index = FastaIndex.read(index_path(fasta_path))
    first, stop = shard_range(index.num_records, shard_index, num_shards)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)  # no manifest = incomplete shard, until we finish
    try:
        state = _write_arrays(fasta_path, out_dir, first, stop, chunk_residues)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a failed job leaves nothing behind
        raise
    assert state.sequences == stop - first
    files = {name: {"sha256": sha256_file(out_dir / name), "bytes": (out_dir / name).stat().st_size}
             for name in (IDS_FILE, OFFSETS_FILE)}  # fmt: skip
    manifest = {
        "format": FORMAT,
        "num_sequences": state.sequences,
        "num_tokens": state.tokens,
        "num_residues": state.tokens - 2 * state.sequences,
        "min_length": state.min_length,
        "max_length": state.max_length,
        "vocab": list(ESM2_VOCAB),
        "shard_index": shard_index,
        "num_shards": num_shards,
        "records": [first, stop],
        "source": str(fasta_path),
        "record_ids_sha256": state.id_digest.hexdigest(),
        "files": files,
    }
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    return manifest


def tokenize_source(
    fasta_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    num_shards: int,
    workers: int = 1,
    chunk_residues: int = CHUNK_RESIDUES,
) -> dict[str, Any]:
    """Tokenize every shard of one (split, source) FASTA into ``out_dir/shard<k>/``, ``workers`` shards at a
    time (separate processes, each in the bounded memory of :func:`tokenize_shard`), then write the source
    manifest ``out_dir/manifest.json`` last: each shard's directory, sequence and token counts and file
    digests.  Returns that manifest.

    One job per (split, source) instead of one per shard: the paper's 4 sources x 64 shards were 260 jobs,
    each a few minutes of one core, and a quarter of the paper grid's DAG.  The shards and their contents do
    not depend on ``workers``.  A failed shard stops the rest (its error, naming the record, is raised);
    the Snakemake rule declares ``out_dir`` a ``directory()`` output, so a failed job leaves nothing.
    The workers are spawned (they import the main module first): a script that calls this with
    ``workers > 1`` keeps its body under ``if __name__ == "__main__"`` (``scripts/tokenize_source.py``).
    """
    if workers < 1:
        raise ValueError(f"tokenize workers must be >= 1, got {workers}; set tokenize.threads to 1 or more")
    fasta_path, out_dir = Path(fasta_path), Path(out_dir)
    shard_dirs = [out_dir / f"shard{k}" for k in range(num_shards)]
    args = [(fasta_path, d, k, num_shards, chunk_residues) for k, d in enumerate(shard_dirs)]
    workers = min(workers, num_shards)
    if workers == 1:
        manifests = [_tokenize_one(a) for a in args]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child of a threaded parent (Snakemake, numpy's BLAS) can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                manifests = list(pool.map(_tokenize_one, args))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    shards = [
        {"dir": d.name, **{k: m[k] for k in ("num_sequences", "num_tokens", "records", "files")}}
        for d, m in zip(shard_dirs, manifests, strict=True)
    ]
    manifest = {
        "format": FORMAT,
        "source": str(fasta_path),
        "num_shards": num_shards,
        "num_sequences": sum(s["num_sequences"] for s in shards),
        "num_tokens": sum(s["num_tokens"] for s in shards),
        "shards": shards,
    }
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    return manifest


def _tokenize_one(args: tuple[Path, Path, int, int, int]) -> dict[str, Any]:
    fasta_path, shard_dir, shard_index, num_shards, chunk_residues = args
    return tokenize_shard(
        fasta_path, shard_dir, shard_index=shard_index, num_shards=num_shards, chunk_residues=chunk_residues
    )


def split_shards(train_shards: int, fractions: dict[str, float], split: str) -> int:
    """Token shards of ``split``: ``tokenize.shards`` for train, and for a smaller split the same shard size,
    ``ceil(train_shards * f_split / f_train)``, at least one.  The paper's valid split (0.4% of the data)
    thus gets 1 shard per source, not 64 jobs of a few thousand proteins each."""
    if split == "train":
        return train_shards
    return max(1, math.ceil(train_shards * fractions.get(split, 0.0) / fractions["train"]))
