"""Downstream localization data sets (ProtST's DeepLoc-derived tables): spec and conversion.

The ProtST study fine-tunes on two tables published on the Hugging Face hub,
``mila-intel/ProtST-SubcellularLocalization`` (10 classes; 8,420 / 2,811 / 2,773 proteins in
train / valid / test) and ``mila-intel/ProtST-BinaryLocalization`` (membrane-bound vs soluble; about
5,161 / 1,727 / 1,746).  Their files have the columns ``prot_seq`` (residues separated by a space,
"M K T A Y") and ``localization`` (the integer label id); the binary CSV also has a leading index column.

* :class:`TableDataset` is one entry of the config's ``downstream.datasets`` (one file per split, its
  format, the column names, the class names indexed by label id, the expected counts).
* :func:`convert_dataset` checks and converts the split files into one Parquet with a JSON report of what
  was found (counts against the expected ones, classes per split, whitespace removed).

Downloading the split files, with a lock file of observed checksums: :mod:`plmscale.lockfile`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import polars as pl

from plmscale.atomic import atomic_path, write_json_atomic
from plmscale.download import SCHEMES

__all__ = [
    "ALPHABET",
    "FORMATS",
    "SPLITS",
    "FileSpec",
    "TableDataset",
    "convert_dataset",
    "load_split",
]

SPLITS = ("train", "valid", "test")
FORMATS = ("parquet", "csv", "tsv")
ALPHABET = "ACDEFGHIKLMNPQRSTVWYBZXUO"  # 20 standard + B Z X (ambiguous) + U O (Sec, Pyl)
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
