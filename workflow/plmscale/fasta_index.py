"""Streamed FASTA writing with a sparse record index, and reading a record range through it.

The split stage writes each (split, source) FASTA with :class:`IndexedFastaWriter`, which records the byte
offset of every ``stride``-th record (4,096 by default: about 250,000 offsets for a billion records),
with the record and residue counts.  A
tokenize job then reads only its own record range: :func:`read_record_range` seeks to the index entry at
or before the range's first record, skips at most ``stride - 1`` records and stops after the range, so a
job of ``1/S`` of the file reads about ``1/S`` of it (plus one stride).

The index is a JSON document (format ``plmscale-fasta-index-v1``) written atomically after the FASTA; it
names the FASTA's size in bytes, which the reader checks, so an index never describes another file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from plmscale.atomic import atomic_path, write_json_atomic

__all__ = ["FastaIndex", "IndexedFastaWriter", "index_fasta", "read_record_range", "shard_range"]

FORMAT = "plmscale-fasta-index-v1"
STRIDE = 4096
LINE_WIDTH = 60


@dataclass(frozen=True)
class FastaIndex:
    """Counts and sparse byte offsets of one FASTA file (``offsets[j]`` = start of record ``j * stride``)."""

    num_records: int
    num_residues: int
    fasta_bytes: int
    stride: int
    offsets: tuple[int, ...]
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["offsets"] = list(self.offsets)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FastaIndex:
        if data.get("format") != FORMAT:
            raise ValueError(f"FASTA index format is {data.get('format')!r}, expected {FORMAT!r}")
        return cls(
            num_records=int(data["num_records"]),
            num_residues=int(data["num_residues"]),
            fasta_bytes=int(data["fasta_bytes"]),
            stride=int(data["stride"]),
            offsets=tuple(int(x) for x in data["offsets"]),
        )

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> FastaIndex:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(
                f"{path}: not a readable FASTA index ({err}). Fix: re-run the split rule "
                "(snakemake --forcerun split)"
            ) from err


def index_path(fasta: str | os.PathLike[str]) -> Path:
    """Where the index of ``fasta`` lives: ``<fasta>.index.json``."""
    return Path(f"{os.fspath(fasta)}.index.json")


class IndexedFastaWriter:
    """Write records to ``path`` (atomically: a temporary name until :meth:`close` commits) and its index.

    Use as a context manager; an exception inside the block leaves neither file.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, stride: int = STRIDE, width: int = LINE_WIDTH
    ) -> None:
        if stride < 1 or width < 1:
            raise ValueError(f"stride={stride} and width={width} must be >= 1")
        self.path = Path(path)
        self.stride, self.width = stride, width
        self.num_records = self.num_residues = self.bytes = 0
        self.offsets: list[int] = []
        self._atomic = atomic_path(self.path)
        self._handle: TextIO | None = None

    def __enter__(self) -> IndexedFastaWriter:
        tmp = self._atomic.__enter__()
        self._handle = open(tmp, "w", encoding="ascii", newline="\n")
        return self

    def write(self, record_id: str, sequence: str) -> None:
        """Append one record (``sequence`` wrapped at ``width`` residues; ASCII only)."""
        assert self._handle is not None, "use IndexedFastaWriter as a context manager"
        if self.num_records % self.stride == 0:
            self.offsets.append(self.bytes)
        w = self.width
        lines = [f">{record_id}"] + [sequence[i : i + w] for i in range(0, len(sequence), w)]
        text = "\n".join(lines) + "\n"
        self._handle.write(text)
        self.bytes += len(text)  # ASCII: one byte per character
        self.num_records += 1
        self.num_residues += len(sequence)

    def index(self) -> FastaIndex:
        return FastaIndex(self.num_records, self.num_residues, self.bytes, self.stride, tuple(self.offsets))

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._handle is not None
        self._handle.close()
        self._atomic.__exit__(exc_type, exc, tb)
        if exc_type is None:
            write_json_atomic(index_path(self.path), self.index().to_dict())


def shard_range(num_records: int, shard_index: int, num_shards: int) -> tuple[int, int]:
    """Records ``[first, stop)`` of shard ``shard_index``: contiguous, sizes differing by at most one."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"shard_index must be in [0, num_shards) with num_shards >= 1, got shard_index={shard_index}, "
            f"num_shards={num_shards}"
        )
    return num_records * shard_index // num_shards, num_records * (shard_index + 1) // num_shards


def read_record_range(fasta: str | os.PathLike[str], first: int, stop: int) -> Iterator[tuple[str, str]]:
    """Yield (id, sequence) of records ``first .. stop - 1`` of an indexed FASTA, reading only that part.

    Raises ``ValueError`` naming the file and the fix when the index does not describe the file (size or
    record count) or the range is out of bounds.
    """
    fasta = Path(fasta)
    if not index_path(fasta).is_file():
        raise ValueError(
            f"{fasta}: no index {index_path(fasta).name} beside it. Fix: run the split rule, which writes "
            "it, or index the file once with plmscale.fasta_index.index_fasta"
        )
    index = FastaIndex.read(index_path(fasta))
    size = fasta.stat().st_size
    if size != index.fasta_bytes:
        raise ValueError(
            f"{fasta}: {size} bytes, its index says {index.fasta_bytes}; the file changed after the split. "
            "Fix: re-run the split rule (snakemake --forcerun split)"
        )
    if not 0 <= first <= stop <= index.num_records:
        raise ValueError(f"{fasta}: records [{first}, {stop}) outside the file's {index.num_records} records")
    if first == stop:
        return
    block = first // index.stride
    record = block * index.stride
    with open(fasta, "rb") as handle:
        handle.seek(index.offsets[block])
        header: str | None = None
        chunks: list[str] = []
        for raw in handle:
            if raw.startswith(b">"):
                if header is not None:
                    if record >= first:
                        yield header, "".join(chunks)
                    record += 1
                    if record >= stop:
                        return
                header, chunks = raw[1:].split(maxsplit=1)[0].decode("ascii"), []
            elif header is not None and record >= first:
                chunks.append(raw.rstrip().decode("ascii"))
        if header is not None and record < stop:
            if record >= first:
                yield header, "".join(chunks)
            record += 1
    if record != stop:
        raise ValueError(
            f"{fasta}: ended at record {record}, expected at least {stop} (index says {index.num_records}). "
            "Fix: re-run the split rule (snakemake --forcerun split)"
        )


def index_fasta(fasta: str | os.PathLike[str], *, stride: int = STRIDE) -> FastaIndex:
    """Index an existing FASTA (one streamed pass) and write ``<fasta>.index.json``; returns the index.

    For FASTA files the split stage did not write (tests, a hand-made split).  Residues are the bytes of
    the sequence lines without line ends; the file must be plain text, validated (plmscale.validate).
    """
    fasta = Path(fasta)
    offsets: list[int] = []
    records = residues = position = 0
    with open(fasta, "rb") as handle:
        for raw in handle:
            if raw.startswith(b">"):
                if records % stride == 0:
                    offsets.append(position)
                records += 1
            else:
                residues += len(raw.rstrip())
            position += len(raw)
    index = FastaIndex(records, residues, position, stride, tuple(offsets))
    write_json_atomic(index_path(fasta), index.to_dict())
    return index
