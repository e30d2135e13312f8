"""Streaming FASTA reading and atomic FASTA writing.

The reader is deliberately permissive about layout (CRLF, trailing spaces, wrapped lines, blank lines,
gzip) and strict about structure (data before the first header, empty header IDs). It does not judge
residues: records are yielded as found, including empty ones, so that :mod:`plmscale.validate` can report
every problem with its file and line. Whitespace *inside* or at the start of a sequence line is removed too,
but counted on the record (``whitespace``, ``whitespace_at``) so that the validation report shows it;
whitespace at line ends (trailing spaces, ``\\r\\n``) is layout and is not counted. Whitespace means the
ASCII whitespace bytes (space, tab, CR, LF, VT, FF); any other character is left for validation to judge.

The reader works on bytes, a block of about 4 MiB at a time split at record starts (``\\n>``), so that its
Python work is per record rather than per line: header line numbers come from counting newlines.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np

from plmscale.atomic import atomic_path

__all__ = [
    "FastaRecord",
    "format_record",
    "read_fasta",
    "read_fasta_ids",
    "repeated_id_hashes",
    "write_fasta",
]

_GZIP_MAGIC = b"\x1f\x8b"
_BLOCK = 1 << 22
_WS = b" \t\n\r\x0b\x0c"
_WS_RE = re.compile(b"[ \t\r\x0b\x0c]")
_ID_CHUNK = 1 << 20  # ID hashes held in memory before they are spilled to bucket files
_BUCKETS = 256  # bucket files: each holds ~1/256 of the hashes (~32 MB at a billion records)


@dataclass(slots=True)
class FastaRecord:
    """One FASTA record (a slotted, not frozen, dataclass: the reader builds one per record, and a frozen
    one costs ~6x more to build).

    ``id`` is the first whitespace-separated word of the header, ``description`` the rest of the header
    (stripped, possibly empty), ``sequence`` the concatenated sequence lines with all whitespace removed
    (possibly empty), and ``line`` the 1-based line number of the header in the source file.
    ``whitespace`` counts the whitespace characters removed inside or at the start of sequence lines (not
    line ends) and ``whitespace_at`` is the 1-based position in ``sequence`` of the residue that follows
    the first of them (``None`` when ``whitespace == 0``).
    """

    id: str
    description: str
    sequence: str
    line: int
    whitespace: int = 0
    whitespace_at: int | None = None


def _open_binary(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading, transparently gunzipping when it starts with the gzip magic."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _decode_line(raw: bytes, path: Path, lineno: int, column: int = 1) -> str:
    """Decode one line (whose first byte is at ``column``) as UTF-8, trailing whitespace removed."""
    try:
        return raw.decode("utf-8").rstrip()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}:{lineno}: byte {raw[err.start]:#04x} at column {err.start + column} is not valid UTF-8 "
            "text. Fix: convert the file to plain ASCII/UTF-8 FASTA."
        ) from err


def _parse_header(raw: bytes, path: Path, lineno: int) -> tuple[str, str]:
    """Split a header line (without ``>``) into (id, description); an empty id is an error."""
    parts = _decode_line(raw, path, lineno, column=2).split(maxsplit=1)
    if not parts:
        raise ValueError(
            f"{path}:{lineno}: header '>' has an empty record ID. "
            "Fix: put an identifier directly after '>' (e.g. '>seq1 description')."
        )
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _blocks(handle: BinaryIO) -> Iterator[bytes]:
    """Yield the stream in pieces cut just before a record start: every piece but the first starts with '>'.

    The newline of the cut (the one before ``>``) is dropped, exactly as ``split(b"\\n>")`` drops it.
    """
    pending: list[bytes] = []
    while chunk := handle.read(_BLOCK):
        cut = chunk.rfind(b"\n>")
        if cut < 0:
            pending.append(chunk)  # a record longer than a block: keep collecting
            continue
        pending.append(chunk[:cut])
        yield b"".join(pending)
        pending = [chunk[cut + 1 :]]
    yield b"".join(pending)


def _check_preamble(text: bytes, path: Path) -> None:
    """Raise for anything but blank lines before the first header."""
    for lineno, raw in enumerate(text.split(b"\n"), start=1):
        if raw.strip():
            line = _decode_line(raw, path, lineno)
            raise ValueError(
                f"{path}:{lineno}: sequence data before the first header (line starts with "
                f"{line[:20]!r}). Fix: add a '>ID' header line before the sequence, or check that the "
                "file is FASTA."
            )


def _record_parts(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (header line number, record text without its '>' and without the final newline)."""
    lineno = 1  # the line the next part starts on
    first = True
    with _open_binary(path) as handle:
        try:
            for block in _blocks(handle):
                parts = block.split(b"\n>")
                if first and not block.startswith(b">"):
                    _check_preamble(parts[0], path)
                    lineno += parts[0].count(b"\n") + 1
                    del parts[0]
                elif parts:
                    parts[0] = parts[0][1:]
                first = False
                for part in parts:
                    yield lineno, part
                    lineno += part.count(b"\n") + 1
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise ValueError(
                f"{path}: gzip stream is truncated or corrupt after line {lineno - 1} ({err}). "
                "Fix: re-download or re-compress the file."
            ) from err


def _inner_whitespace(body: bytes) -> tuple[int, int | None]:
    """Count whitespace inside/at the start of the lines of ``body``; return (count, first position)."""
    count, first, residues = 0, None, 0
    for raw in body.split(b"\n"):
        line = raw.rstrip()
        clean = line.translate(None, _WS)
        if len(clean) != len(line):
            if first is None:
                match = _WS_RE.search(line)
                assert match is not None
                first = residues + match.start() + 1
            count += len(line) - len(clean)
        residues += len(clean)
    return count, first


def _raise_undecodable(body: bytes, path: Path, first_line: int) -> None:
    """Raise the UTF-8 error of the first undecodable line of ``body`` (its first line is ``first_line``)."""
    for offset, raw in enumerate(body.split(b"\n")):
        _decode_line(raw, path, first_line + offset)
    raise ValueError(f"{path}:{first_line}: sequence is not valid UTF-8 text. Fix: convert the file.")


def _record(part: bytes, lineno: int, path: Path) -> FastaRecord:
    """Parse one record's text (as yielded by :func:`_record_parts`)."""
    header, _, body = part.partition(b"\n")
    record_id, description = _parse_header(header, path, lineno)
    seq = body.translate(None, _WS)
    whitespace, whitespace_at = 0, None
    if len(body) - len(seq) != body.count(b"\n"):  # something besides line feeds was removed
        whitespace, whitespace_at = _inner_whitespace(body)
    try:
        text = seq.decode("utf-8")
    except UnicodeDecodeError:
        _raise_undecodable(body, path, lineno + 1)
        raise
    return FastaRecord(record_id, description, text, lineno, whitespace, whitespace_at)


def read_fasta(path: str | os.PathLike[str]) -> Iterator[FastaRecord]:
    """Stream the records of a plain or gzipped FASTA file (gzip detected by magic bytes).

    Raises ``ValueError`` naming the file and line for sequence data before the first header, for a header
    with an empty ID and for text that is not UTF-8. Empty records are yielded with ``sequence == ""``.
    """
    path = Path(path)
    for lineno, part in _record_parts(path):
        yield _record(part, lineno, path)


def read_fasta_ids(path: str | os.PathLike[str]) -> Iterator[str]:
    """Stream only the record IDs of a FASTA file (headers parsed and checked as :func:`read_fasta` does)."""
    path = Path(path)
    for lineno, part in _record_parts(path):
        end = part.find(b"\n")
        yield _parse_header(part if end < 0 else part[:end], path, lineno)[0]


def _repeated(hashes: np.ndarray) -> set[int]:
    values, counts = np.unique(hashes, return_counts=True)
    return set(values[counts > 1].tolist())


def _spill(hashes: np.ndarray, scratch: Path, buckets: int) -> None:
    """Append ``hashes`` to the bucket files ``scratch/<bucket>.i8`` (bucket = hash mod ``buckets``)."""
    bucket = (hashes.view(np.uint64) % np.uint64(buckets)).astype(np.intp)
    ends = np.cumsum(np.bincount(bucket, minlength=buckets))
    ordered = hashes[np.argsort(bucket, kind="stable")]
    for b in np.flatnonzero(np.diff(ends, prepend=0)):
        with open(scratch / f"{b:04d}.i8", "ab") as handle:
            handle.write(ordered[ends[b - 1] if b else 0 : ends[b]].tobytes())


def repeated_id_hashes(
    path: str | os.PathLike[str],
    scratch: str | os.PathLike[str],
    *,
    chunk: int | None = None,
    buckets: int | None = None,
) -> set[int]:
    """The ``hash(record_id)`` values that occur two or more times in the FASTA file ``path``.

    In memory independent of the number of records: only the headers are read, and the 64-bit hashes are
    collected ``chunk`` (default 2**20) at a time; beyond one chunk they are spilled into ``buckets`` (256)
    files under ``scratch`` (an empty directory, left holding them) and each file is deduplicated alone with
    ``np.unique``. The result holds the repeated IDs' hashes plus rare 64-bit collisions, so a caller
    checks ``hash(record.id) in result`` and then compares the IDs exactly. Python's ``hash`` of a string is
    salted per process (``PYTHONHASHSEED``): use the result in the process that computed it.
    """
    chunk, buckets = chunk or _ID_CHUNK, buckets or _BUCKETS
    scratch, ids = Path(scratch), read_fasta_ids(path)
    first = np.frombuffer(array("q", map(hash, islice(ids, chunk))), dtype=np.int64)
    if len(first) < chunk:
        return _repeated(first)
    _spill(first, scratch, buckets)
    while len(part := np.frombuffer(array("q", map(hash, islice(ids, chunk))), dtype=np.int64)):
        _spill(part, scratch, buckets)
    out: set[int] = set()
    for bucket_file in sorted(scratch.glob("*.i8")):
        out |= _repeated(np.fromfile(bucket_file, dtype=np.int64))
    return out


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
            handle.write(format_record(*_as_pair(record), width))
            count += 1
    return count


def format_record(header: str, sequence: str, width: int = 60) -> str:
    """One FASTA record as text: ``>header``, then ``sequence`` in lines of ``width`` (none if empty)."""
    if len(sequence) <= width:
        return f">{header}\n{sequence}\n" if sequence else f">{header}\n"
    lines = [sequence[i : i + width] for i in range(0, len(sequence), width)]
    return f">{header}\n" + "\n".join(lines) + "\n"
