"""Downstream localization data sets (ProtST's DeepLoc-derived tables): spec, download, conversion.

The ProtST study fine-tunes on two tables published on the Hugging Face hub,
``mila-intel/ProtST-SubcellularLocalization`` (10 classes; 8,420 / 2,811 / 2,773 proteins in
train / valid / test) and ``mila-intel/ProtST-BinaryLocalization`` (membrane-bound vs soluble; about
5,161 / 1,727 / 1,746).  Their files have the columns ``prot_seq`` (residues separated by a space,
"M K T A Y") and ``localization`` (the integer label id); the binary CSV also has a leading index column.

* :class:`TableDataset` is one entry of the config's ``downstream.datasets`` (one file per split, its
  format, the column names, the class names indexed by label id, the expected counts).
* :func:`download_dataset` downloads each split with :func:`plmscale.download.fetch`.  A checksum in the
  config is verified.  Without one, the *lock file* (a TSV that users commit next to their config) is
  consulted: its row for (dataset, split, url) supplies the sha256 to verify; with no row, the file is
  downloaded unverified once and its observed sha256 is recorded in the lock, so that every later
  download (another machine, a rerun) must match it.
* :func:`convert_dataset` checks and converts the split files into one Parquet with a JSON report of what
  was found (counts against the expected ones, classes per split, whitespace removed).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import polars as pl

from plmscale.atomic import atomic_path, write_json_atomic, write_text_atomic
from plmscale.download import SCHEMES, ChecksumMismatch, DownloadSettings, fetch

__all__ = [
    "ALPHABET",
    "FORMATS",
    "SPLITS",
    "FileSpec",
    "LockEntry",
    "TableDataset",
    "convert_dataset",
    "download_dataset",
    "load_split",
    "read_lock",
    "write_lock",
]

SPLITS = ("train", "valid", "test")
FORMATS = ("parquet", "csv", "tsv")
ALPHABET = "ACDEFGHIKLMNPQRSTVWYBZXUO"  # 20 standard + B Z X (ambiguous) + U O (Sec, Pyl)
LOCK_COLUMNS = ("dataset", "split", "url", "sha256", "bytes", "date")
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
_KEYS = (
    "files", "format", "sequence_column", "label_column", "id_column", "classes", "strip_whitespace",
    "expected_counts",
)  # fmt: skip
Log = Callable[[str], object]


def _key(name: str, key: str) -> str:
    return f"downstream.datasets.{name}.{key}"


def _hex(value: Any, digits: int, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(rf"[0-9a-fA-F]{{{digits}}}", value):
        raise ValueError(
            f"{where} is {value!r}, not a {digits}-digit hex digest. Fix: paste the checksum as published, "
            "or remove the key (the first download then records the observed sha256 in the lock file)"
        )
    return value.lower()


@dataclass(frozen=True)
class FileSpec:
    """One split's file: its URL and optional published checksums."""

    url: str
    sha256: str | None = None
    md5: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url}
        out.update({k: v for k, v in (("sha256", self.sha256), ("md5", self.md5)) if v is not None})
        return out


@dataclass(frozen=True)
class TableDataset:
    """A labelled protein table with a train/valid/test split (config ``downstream.datasets.<name>``).

    ``classes[i]`` is the name of label id ``i``.  ``format`` None means: from each URL's extension.
    ``id_column`` None means: the id is ``"<split>:<row index in the split's file>"``.
    """

    name: str
    files: Mapping[str, FileSpec]
    classes: tuple[str, ...]
    format: str | None = None
    sequence_column: str = "prot_seq"
    label_column: str = "localization"
    id_column: str | None = None
    strip_whitespace: bool = True
    expected_counts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(
                f"downstream.datasets: the name {name!r} is not usable as a file name. Fix: use letters, "
                "digits, '_', '.', '-'"
            )
        if not isinstance(self.files, Mapping) or set(self.files) != set(SPLITS):
            got = sorted(self.files) if isinstance(self.files, Mapping) else self.files
            raise ValueError(
                f"{_key(name, 'files')} has splits {got!r}; exactly {list(SPLITS)} are required. Fix: give "
                "one file (url and optional sha256/md5) per split"
            )
        for split in SPLITS:
            spec = self.files[split]
            where = _key(name, f"files.{split}")
            if not isinstance(spec, FileSpec):
                raise ValueError(f"{where} is {spec!r}, not a FileSpec")
            if not isinstance(spec.url, str) or urlparse(spec.url).scheme not in SCHEMES:
                raise ValueError(
                    f"{where}.url is {spec.url!r}. Fix: give an http(s):// or file:// URL ({SCHEMES})"
                )
            _hex(spec.sha256, 64, f"{where}.sha256")
            _hex(spec.md5, 32, f"{where}.md5")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(
                f"{_key(name, 'format')} is {self.format!r}. Fix: one of {list(FORMATS)}, or remove it to "
                "take the format from each URL's extension"
            )
        for split in SPLITS:
            self.file_format(split)  # an unknown extension fails here, at config time
        for key in ("sequence_column", "label_column"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{_key(name, key)} is {value!r}. Fix: the column's name in the files")
        if self.id_column is not None and (not isinstance(self.id_column, str) or not self.id_column):
            raise ValueError(
                f"{_key(name, 'id_column')} is {self.id_column!r}. Fix: a column name, or remove the key to "
                "use '<split>:<row>' ids"
            )
        classes = self.classes
        if (
            not isinstance(classes, tuple)
            or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise ValueError(
                f"{_key(name, 'classes')} is {list(classes) if isinstance(classes, tuple) else classes!r}. "
                "Fix: a list of at least 2 distinct, non-empty class names, in label-id order (the name of "
                "label 0 first)"
            )
        if len(classes) > 32767:
            raise ValueError(f"{_key(name, 'classes')} has {len(classes)} classes; at most 32767 (int16)")
        if not isinstance(self.strip_whitespace, bool):
            raise ValueError(
                f"{_key(name, 'strip_whitespace')} is {self.strip_whitespace!r}. Fix: true or false"
            )
        counts = self.expected_counts
        if not isinstance(counts, Mapping) or not set(counts) <= set(SPLITS):
            raise ValueError(
                f"{_key(name, 'expected_counts')} is {counts!r}. Fix: a mapping from splits {list(SPLITS)} "
                "to the published number of proteins"
            )
        for split, n in counts.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(
                    f"{_key(name, f'expected_counts.{split}')} is {n!r}. Fix: a non-negative integer"
                )

    def file_format(self, split: str) -> str:
        """``format``, or the format named by the extension of ``split``'s URL (path part, query ignored)."""
        if self.format is not None:
            return self.format
        url = self.files[split].url
        suffix = PurePosixPath(unquote(urlparse(url).path)).suffix.lower()
        if suffix not in _EXTENSIONS:
            raise ValueError(
                f"dataset {self.name!r}, split {split!r}: cannot tell the file format of {url!r} from its "
                f"extension {suffix!r} (known: {sorted(_EXTENSIONS)}). Fix: set "
                f"`format:` ({'|'.join(FORMATS)}) in {_key(self.name, 'format')}"
            )
        return _EXTENSIONS[suffix]

    @classmethod
    def from_config(cls, name: str, mapping: Mapping[str, Any]) -> TableDataset:
        """Build from the config entry ``downstream.datasets.<name>`` (unknown keys are refused)."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"downstream.datasets.{name} is {mapping!r}. Fix: a mapping with {list(_KEYS)}")
        unknown = sorted(set(mapping) - set(_KEYS))
        if unknown:
            raise ValueError(
                f"downstream.datasets.{name}: unknown key(s) {unknown}. Fix: remove them; known keys are "
                f"{list(_KEYS)}"
            )
        for required in ("files", "classes"):
            if required not in mapping:
                raise ValueError(f"{_key(name, required)} is missing. Fix: add it")
        files_in = mapping["files"]
        if not isinstance(files_in, Mapping):
            raise ValueError(
                f"{_key(name, 'files')} is {files_in!r}. Fix: a mapping split -> {{url, sha256}}"
            )
        files: dict[str, FileSpec] = {}
        for split, entry in files_in.items():
            where = _key(name, f"files.{split}")
            if isinstance(entry, str):
                entry = {"url": entry}
            if not isinstance(entry, Mapping) or "url" not in entry or set(entry) - {"url", "sha256", "md5"}:
                raise ValueError(
                    f"{where} is {entry!r}. Fix: a mapping with `url` and optionally `sha256` and `md5`"
                )
            files[str(split)] = FileSpec(
                url=entry["url"],
                sha256=_hex(entry.get("sha256"), 64, f"{where}.sha256"),
                md5=_hex(entry.get("md5"), 32, f"{where}.md5"),
            )
        classes = mapping["classes"]
        if not isinstance(classes, list | tuple):
            raise ValueError(
                f"{_key(name, 'classes')} is {classes!r}. Fix: a list of class names in label-id order"
            )
        expected = mapping.get("expected_counts") or {}
        return cls(
            name=name,
            files=files,
            classes=tuple(classes),
            format=mapping.get("format"),
            sequence_column=mapping.get("sequence_column", "prot_seq"),
            label_column=mapping.get("label_column", "localization"),
            id_column=mapping.get("id_column"),
            strip_whitespace=mapping.get("strip_whitespace", True),
            expected_counts=dict(expected) if isinstance(expected, Mapping) else expected,
        )

    def to_dict(self) -> dict[str, Any]:
        """The config mapping (the inverse of :meth:`from_config`, without the name)."""
        out: dict[str, Any] = {
            "files": {split: self.files[split].to_dict() for split in SPLITS},
            "format": self.format,
            "sequence_column": self.sequence_column,
            "label_column": self.label_column,
            "id_column": self.id_column,
            "classes": list(self.classes),
            "strip_whitespace": self.strip_whitespace,
            "expected_counts": dict(self.expected_counts),
        }
        return out


# ------------------------------------------------------------------------------------------ lock file


@dataclass(frozen=True)
class LockEntry:
    """One row of the lock file: the sha256 observed at the first download of (dataset, split, url)."""

    dataset: str
    split: str
    url: str
    sha256: str
    bytes: int
    date: str


_LOCK_PREAMBLE = (
    "# Observed checksums of downloaded files (plmscale.locdata), one row per dataset and split.\n"
    "# Commit this file next to your config: later downloads must match it.  If a file changed upstream\n"
    "# on purpose, delete its row and rerun: the new file's sha256 is then recorded.\n"
)


def read_lock(path: str | os.PathLike[str]) -> dict[tuple[str, str], LockEntry]:
    """The rows of the lock file at ``path`` by (dataset, split); a missing file has none.

    Lines starting with ``#`` and blank lines are ignored; the first other line must be the header.
    """
    path = Path(path)
    if not path.exists():
        return {}
    rows: dict[tuple[str, str], LockEntry] = {}
    header_seen = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not header_seen:
            if tuple(fields) != LOCK_COLUMNS:
                raise ValueError(
                    f"{path}:{number}: expected the header {'<TAB>'.join(LOCK_COLUMNS)}, got {line!r}. Fix: "
                    "restore the header, or delete the lock file to record all checksums again"
                )
            header_seen = True
            continue
        bad = len(fields) != len(LOCK_COLUMNS) or not re.fullmatch(r"[0-9a-f]{64}", fields[3] or "")
        if not bad:
            bad = not fields[4].isdigit()
        if bad:
            raise ValueError(
                f"{path}:{number}: not a lock row ({'<TAB>'.join(LOCK_COLUMNS)}, lowercase hex sha256, "
                f"byte count): {line!r}. Fix: repair or delete that row"
            )
        entry = LockEntry(fields[0], fields[1], fields[2], fields[3], int(fields[4]), fields[5])
        key = (entry.dataset, entry.split)
        if key in rows:
            raise ValueError(
                f"{path}:{number}: a second row for dataset {entry.dataset!r}, split {entry.split!r}. Fix: "
                "keep only the row of the URL in your config"
            )
        rows[key] = entry
    return rows


def write_lock(path: str | os.PathLike[str], rows: Mapping[tuple[str, str], LockEntry]) -> None:
    """Write the lock file atomically: preamble, header, rows sorted by (dataset, split, url)."""
    lines = [_LOCK_PREAMBLE + "\t".join(LOCK_COLUMNS) + "\n"]
    for entry in sorted(rows.values(), key=lambda e: (e.dataset, e.split, e.url)):
        values = (entry.dataset, entry.split, entry.url, entry.sha256, str(entry.bytes), entry.date)
        if any("\t" in v or "\n" in v for v in values):
            raise ValueError(f"lock row {values!r} contains a tab or newline")
        lines.append("\t".join(values) + "\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(lines))


@contextlib.contextmanager
def _locked_dir(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (two download jobs updating one lock file take turns;
    filesystems without directory locks run unlocked)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _record(lock_path: Path, entry: LockEntry) -> None:
    """Add ``entry`` to the lock file, keeping the other rows (re-read under the lock, then replaced)."""
    with _locked_dir(lock_path.parent):
        rows = read_lock(lock_path)
        key = (entry.dataset, entry.split)
        if key in rows and rows[key] != entry:
            old = rows[key]
            if (old.url, old.sha256) != (entry.url, entry.sha256):
                raise ValueError(
                    f"lock file {lock_path}: dataset {entry.dataset!r}, split {entry.split!r} was recorded "
                    f"meanwhile (by another job?) as {old.url} sha256 {old.sha256}, but this download of "
                    f"{entry.url} has sha256 {entry.sha256}. Fix: rerun; if it persists, the file is not "
                    "stable upstream"
                )
            return
        rows[key] = entry
        write_lock(lock_path, rows)


# ------------------------------------------------------------------------------------------- download


def download_dataset(
    spec: TableDataset,
    out_dir: str | os.PathLike[str],
    lock_path: str | os.PathLike[str],
    *,
    settings: DownloadSettings | None = None,
    log: Log = print,
) -> dict[str, dict[str, Any]]:
    """Download every split of ``spec`` to ``out_dir/<split>.<ext>`` (manifest ``<split>.manifest.json``).

    Checksums: the config's sha256/md5 when given (origin "config"); else the lock file's sha256 for
    (dataset, split, url) (origin "lock"); else none (origin "first download": the observed sha256 is then
    recorded in the lock file).  A lock row for the same dataset and split but another URL is an error; a
    body that does not match the lock is an error naming the lock file, dataset, split and both sha256, and
    leaves no output file.
    Returns, per split: ``path``, ``sha256``, ``bytes``, ``origin``.
    """
    out_dir, lock_path = Path(out_dir), Path(lock_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    locks = read_lock(lock_path)
    for split in SPLITS:  # every URL conflict with the lock is refused before anything is downloaded
        file, locked = spec.files[split], locks.get((spec.name, split))
        if locked is not None and not (file.sha256 or file.md5) and locked.url != file.url:
            raise ValueError(
                f"lock file {lock_path}: dataset {spec.name!r}, split {split!r} was recorded for URL "
                f"{locked.url}, but {_key(spec.name, f'files.{split}.url')} is now {file.url}. Fix: if "
                "the change is intended, delete that row from the lock file (the new file's sha256 is "
                "then recorded at its first download); otherwise restore the URL"
            )
    results: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        file = spec.files[split]
        output = out_dir / f"{split}.{spec.file_format(split)}"
        manifest = out_dir / f"{split}.manifest.json"
        locked = read_lock(lock_path).get((spec.name, split))
        common: dict[str, Any] = {"manifest": manifest, "settings": settings, "log": log}
        if file.sha256 or file.md5:
            if locked is not None and (
                locked.url != file.url or (file.sha256 and file.sha256 != locked.sha256)
            ):
                log(
                    f"{spec.name} {split}: the config's checksum is used; the lock row of {lock_path} "
                    f"({locked.url}, sha256 {locked.sha256}) differs and is ignored (delete it if stale)"
                )
            got = fetch(file.url, output, sha256=file.sha256, md5=file.md5, **common)
            origin = "config"
        elif locked is not None:
            try:
                got = fetch(
                    file.url, output, sha256=locked.sha256, checksum_origin=f"lock {lock_path}", **common
                )
            except ChecksumMismatch as err:
                raise ValueError(
                    f"lock file {lock_path}: dataset {spec.name!r}, split {split!r} ({file.url}) was "
                    f"recorded with sha256 {locked.sha256} ({locked.bytes} bytes, {locked.date}), but the "
                    f"downloaded file has sha256 {err.actual['sha256']} ({err.actual['size']} bytes); it "
                    "was deleted. Fix: if the file changed upstream on purpose, delete that row from the "
                    "lock file and rerun (the new sha256 is recorded); otherwise rerun once (corrupted in "
                    "transit?) and check the source"
                ) from err
            origin = "lock"
        else:
            got = fetch(
                file.url, output, unverified_ok=True,
                checksum_origin=f"none: first download, recorded in lock {lock_path}", **common,
            )  # fmt: skip
            origin = "first download"
            date = datetime.now(UTC).isoformat(timespec="seconds")
            _record(lock_path, LockEntry(spec.name, split, file.url, got.sha256, got.bytes, date))
            log(
                f"{spec.name} {split}: first download of {file.url}, not verified; its sha256 {got.sha256} "
                f"({got.bytes} bytes) is recorded in {lock_path}: commit that file, later downloads must "
                "match it"
            )
        results[split] = {"path": str(output), "sha256": got.sha256, "bytes": got.bytes, "origin": origin}
    return results


# ------------------------------------------------------------------------------------------ conversion


def _read_table(spec: TableDataset, split: str, path: Path) -> pl.DataFrame:
    fmt = spec.file_format(split)
    try:
        if fmt == "parquet":
            return pl.read_parquet(path)
        # every column as text: labels are parsed (and bad ones named) below, ids keep leading zeros
        return pl.read_csv(path, separator="," if fmt == "csv" else "\t", infer_schema=False)
    except Exception as err:  # polars raises its own exception types; name the file and the format
        raise ValueError(
            f"dataset {spec.name!r}, split {split!r}: cannot read {path} as {fmt}: {err}. Fix: check the "
            f"file, or set {_key(spec.name, 'format')}"
        ) from err


def _require_columns(spec: TableDataset, path: Path, frame: pl.DataFrame) -> None:
    for key in ("sequence_column", "label_column", "id_column"):
        column = getattr(spec, key)
        if column is not None and column not in frame.columns:
            raise ValueError(
                f"{path}: no column {column!r} ({_key(spec.name, key)}); the file has columns "
                f"{frame.columns}. Fix: set {_key(spec.name, key)} to the right one"
            )


def _first_row(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def _labels(spec: TableDataset, path: Path, column: pl.Series) -> pl.Series:
    """The label ids as Int64; null, non-integer or out-of-range values raise naming the first bad row."""
    n_classes = len(spec.classes)
    where = f"{path}: column {spec.label_column!r} ({_key(spec.name, 'label_column')})"
    if column.dtype.is_integer():
        values = column.cast(pl.Int64)
        bad = column.is_null()
    elif column.dtype.is_float():
        values = column.cast(pl.Int64, strict=False)
        bad = column.is_null() | ~column.is_finite() | (column != column.floor())
    else:
        text = column.cast(pl.String).str.strip_chars()
        values = text.cast(pl.Int64, strict=False)
        bad = values.is_null()
    if bad.any():
        row = _first_row(bad)
        raise ValueError(
            f"{where}, row {row}: label {column[row]!r} is not an integer label id ({int(bad.sum())} such "
            f"row(s)). Fix: point {_key(spec.name, 'label_column')} at the integer label column"
        )
    out = (values < 0) | (values >= n_classes)
    if out.any():
        row = _first_row(out)
        raise ValueError(
            f"{where}, row {row}: label {values[row]} is outside [0, {n_classes}) for the {n_classes} "
            f"classes of {_key(spec.name, 'classes')} ({int(out.sum())} such row(s)). Fix: list every class "
            "in label-id order, or point label_column at the right column"
        )
    return values


def _sequences(spec: TableDataset, path: Path, column: pl.Series) -> tuple[pl.Series, int]:
    """(checked sequences, rows changed by whitespace stripping)."""
    where = f"{path}: column {spec.sequence_column!r}"
    if column.dtype != pl.String:
        raise ValueError(
            f"{where} has type {column.dtype}, not text. Fix: point {_key(spec.name, 'sequence_column')} at "
            "the sequence column"
        )
    stripped = column.str.replace_all(r"\s", "") if spec.strip_whitespace else column
    changed = int((stripped != column).fill_null(False).sum()) if spec.strip_whitespace else 0
    empty = stripped.is_null() | (stripped.str.len_chars() == 0)
    if empty.any():
        row = _first_row(empty)
        raise ValueError(
            f"{where}, row {row}: empty or missing sequence ({int(empty.sum())} such row(s)). Fix: remove "
            "the row(s) from the source or correct the file"
        )
    bad = stripped.str.contains(f"[^{ALPHABET}]")
    if bad.any():
        row = _first_row(bad)
        chars = sorted(set(re.findall(f"[^{ALPHABET}]", stripped[row])))
        hint = (
            " Whitespace is kept because strip_whitespace is false."
            if not spec.strip_whitespace and any(c.isspace() for c in chars)
            else ""
        )
        raise ValueError(
            f"{where}, row {row}: characters {chars} are not among the 25 residue letters {ALPHABET} "
            f"({int(bad.sum())} such row(s)); nothing is uppercased or replaced silently.{hint} Fix: "
            f"correct the source file, or set {_key(spec.name, 'strip_whitespace')}: true for "
            "space-separated residues"
        )
    return stripped, changed


def _ids(spec: TableDataset, split: str, path: Path, frame: pl.DataFrame) -> pl.Series:
    n = frame.height
    if spec.id_column is None:
        return pl.Series("id", [f"{split}:{i}" for i in range(n)], dtype=pl.String)
    ids = frame[spec.id_column].cast(pl.String)
    missing = ids.is_null() | (ids.str.len_chars() == 0)
    if missing.any():
        row = _first_row(missing)
        raise ValueError(
            f"{path}: column {spec.id_column!r} ({_key(spec.name, 'id_column')}), row {row}: empty id. Fix: "
            "choose a column with an id on every row, or remove id_column"
        )
    repeated = ids.is_duplicated()
    if repeated.any():
        row = _first_row(repeated)
        raise ValueError(
            f"{path}: column {spec.id_column!r} ({_key(spec.name, 'id_column')}), row {row}: id {ids[row]!r} "
            f"occurs more than once ({int(repeated.sum())} rows share an id). Fix: choose a unique column, "
            "or remove id_column"
        )
    return ids.alias("id")


def _split_frame(spec: TableDataset, split: str, path: Path) -> tuple[pl.DataFrame, int]:
    raw = _read_table(spec, split, path)
    _require_columns(spec, path, raw)
    sequences, changed = _sequences(spec, path, raw[spec.sequence_column])
    labels = _labels(spec, path, raw[spec.label_column])
    names = pl.Series("label", spec.classes, dtype=pl.String)
    frame = pl.DataFrame(
        {
            "split": pl.Series([split] * raw.height, dtype=pl.String),
            "row": pl.Series(range(raw.height), dtype=pl.Int64),
            "id": _ids(spec, split, path, raw),
            "sequence": sequences.alias("sequence"),
            "length": sequences.str.len_chars().cast(pl.Int32),
            "label_id": labels.cast(pl.Int16),
            "label": names.gather(labels),
        }
    )
    return frame, changed


def convert_dataset(
    spec: TableDataset,
    files: Mapping[str, str | os.PathLike[str]],
    output_parquet: str | os.PathLike[str],
    report_json: str | os.PathLike[str],
    *,
    log: Log = print,
) -> dict[str, Any]:
    """Check and convert the split files of ``spec`` into one Parquet and a JSON report; return the report.

    Parquet columns: ``split`` (str), ``row`` (int64, row index in the split's file), ``id`` (str),
    ``sequence`` (str), ``length`` (int32), ``label_id`` (int16), ``label`` (str), ordered train, valid,
    test, then row.  Errors (``ValueError``, naming the file, row and config key): a missing column, an
    empty sequence, a character outside :data:`ALPHABET` after whitespace stripping (nothing is uppercased
    silently), a label that is not an integer in ``[0, len(classes))``, a class found in no split.  A split
    whose count differs from ``expected_counts`` is reported (``count_matches`` false) and logged loudly,
    not an error: the published numbers differ by a protein here and there.
    """
    if set(files) != set(SPLITS):
        raise ValueError(
            f"convert_dataset({spec.name!r}): files for {sorted(files)}, expected {list(SPLITS)}"
        )
    frames: list[pl.DataFrame] = []
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        path = Path(files[split])
        frame, changed = _split_frame(spec, split, path)
        frames.append(frame)
        counts = dict.fromkeys(spec.classes, 0)
        for name, n in frame.group_by("label").len().iter_rows():
            counts[name] = n
        expected = spec.expected_counts.get(split)
        splits[split] = {
            "file": str(path),
            "n_found": frame.height,
            "n_expected": expected,
            "count_matches": None if expected is None else frame.height == expected,
            "class_counts": counts,
            "labels_missing": [name for name in spec.classes if counts[name] == 0],
            "whitespace_stripped": changed,
            "min_length": frame["length"].min(),
            "max_length": frame["length"].max(),
        }
        if changed:
            log(
                f"{spec.name} {split}: whitespace removed inside the sequences of {changed} of "
                f"{frame.height} rows"
            )
    table = pl.concat(frames, how="vertical")
    found = set(table["label"].unique().to_list())
    absent = [name for name in spec.classes if name not in found]
    if absent:
        raise ValueError(
            f"dataset {spec.name!r}: classes {absent} (label ids {[spec.classes.index(a) for a in absent]}) "
            f"occur in no split. Fix: check {_key(spec.name, 'classes')} (one name per label id, in order) "
            f"and {_key(spec.name, 'label_column')}"
        )
    verdicts = [s["count_matches"] for s in splits.values() if s["count_matches"] is not None]
    report = {
        "dataset": spec.name,
        "output": str(output_parquet),
        "classes": list(spec.classes),
        "n_total": table.height,
        "splits": splits,
        "labels_found": [name for name in spec.classes if name in found],
        "counts_match": all(verdicts) if verdicts else None,
    }
    for split, info in splits.items():
        if info["count_matches"] is False:
            log(
                f"WARNING: {spec.name} {split}: found {info['n_found']} proteins, the config expects "
                f"{info['n_expected']} ({_key(spec.name, f'expected_counts.{split}')}); converted anyway, "
                f"see {report_json}"
            )
    Path(output_parquet).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output_parquet) as tmp:
        table.write_parquet(tmp)
    write_json_atomic(report_json, report)
    return report


def load_split(parquet: str | os.PathLike[str], split: str) -> pl.DataFrame:
    """The rows of one split of a converted dataset (see :func:`convert_dataset`), in row order."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {list(SPLITS)}")
    return pl.scan_parquet(parquet).filter(pl.col("split") == split).sort("row").collect()
