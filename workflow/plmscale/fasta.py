"""Streaming FASTA reading and atomic FASTA writing.

The reader is deliberately permissive about layout (CRLF, trailing spaces, wrapped lines, blank lines,
gzip) and strict about structure (data before the first header, empty header IDs). It does not judge
residues: records are yielded as found, including empty ones, so that :mod:`plmscale.validate` can report
every problem with its file and line.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from plmscale.atomic import atomic_path

__all__ = ["FastaRecord", "read_fasta", "write_fasta"]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record.

    ``id`` is the first whitespace-separated word of the header, ``description`` the rest of the header
    (stripped, possibly empty), ``sequence`` the concatenated sequence lines with all whitespace removed
    (possibly empty), and ``line`` the 1-based line number of the header in the source file.
    """

    id: str
    description: str
    sequence: str
    line: int


def _open_binary(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading, transparently gunzipping when it starts with the gzip magic."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _decode_line(raw: bytes, path: Path, lineno: int) -> str:
    """Decode one line as UTF-8 with trailing whitespace (including ``\\r``) removed."""
    try:
        return raw.decode("utf-8").rstrip()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}:{lineno}: byte {raw[err.start]:#04x} at column {err.start + 1} is not valid UTF-8 text. "
            "Fix: convert the file to plain ASCII/UTF-8 FASTA."
        ) from err


def _parse_header(text: str, path: Path, lineno: int) -> tuple[str, str]:
    """Split a header line (without ``>``) into (id, description); an empty id is an error."""
    parts = text.split(maxsplit=1)
    if not parts:
        raise ValueError(
            f"{path}:{lineno}: header '>' has an empty record ID. "
            "Fix: put an identifier directly after '>' (e.g. '>seq1 description')."
        )
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line) pairs; gzip corruption becomes a ``ValueError``."""
    with _open_binary(path) as handle:
        lineno = 0
        try:
            for lineno, raw in enumerate(handle, start=1):
                yield lineno, _decode_line(raw, path, lineno)
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise ValueError(
                f"{path}: gzip stream is truncated or corrupt after line {lineno} ({err}). "
                "Fix: re-download or re-compress the file."
            ) from err


def read_fasta(path: str | os.PathLike[str]) -> Iterator[FastaRecord]:
    """Stream the records of a plain or gzipped FASTA file (gzip detected by magic bytes).

    Raises ``ValueError`` naming the file and line for sequence data before the first header and for a
    header with an empty ID. Empty records are yielded with ``sequence == ""``.
    """
    path = Path(path)
    header: tuple[str, str, int] | None = None
    chunks: list[str] = []
    for lineno, line in _iter_lines(path):
        if line.startswith(">"):
            if header is not None:
                yield FastaRecord(header[0], header[1], "".join(chunks), header[2])
            record_id, description = _parse_header(line[1:], path, lineno)
            header = (record_id, description, lineno)
            chunks = []
        elif line:
            if header is None:
                raise ValueError(
                    f"{path}:{lineno}: sequence data before the first header (line starts with "
                    f"{line[:20]!r}). Fix: add a '>ID' header line before the sequence, or check that the "
                    "file is FASTA."
                )
            chunks.append("".join(line.split()))
    if header is not None:
        yield FastaRecord(header[0], header[1], "".join(chunks), header[2])


def _as_pair(record: tuple[str, str] | FastaRecord) -> tuple[str, str]:
    """Return (header text, sequence) for a FastaRecord or an (id, sequence) pair, checking the ID."""
    if isinstance(record, FastaRecord):
        record_id, sequence = record.id, record.sequence
        header = f"{record.id} {record.description}" if record.description else record.id
    else:
        record_id, sequence = record
        header = record_id
    if not record_id or any(ch.isspace() for ch in record_id):
        raise ValueError(
            f"record ID {record_id!r} is empty or contains whitespace and would not survive a FASTA round "
            "trip. Fix: use a non-empty ID without spaces."
        )
    return header, sequence


def write_fasta(
    records: Iterable[tuple[str, str]] | Iterable[FastaRecord],
    path: str | os.PathLike[str],
    width: int = 60,
) -> int:
    """Write records to ``path`` atomically, wrapping sequences at ``width`` residues; return the count.

    ``records`` are ``(id, sequence)`` pairs or :class:`FastaRecord` objects (whose description is kept).
    An empty sequence is written as a header with no sequence line.
    """
    if width < 1:
        raise ValueError(f"write_fasta: width must be >= 1, got {width}")
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            header, sequence = _as_pair(record)
            handle.write(f">{header}\n")
            for start in range(0, len(sequence), width):
                handle.write(sequence[start : start + width])
                handle.write("\n")
            count += 1
    return count
