"""Conversion of the downstream localization data sets (:mod:`plmscale.locdata`) to one Parquet.

:func:`convert_dataset` checks and converts the split files into one Parquet with a JSON report of what
was found (counts against the expected ones, classes per split, whitespace removed); :func:`load_split`
reads one split back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from plmscale.atomic import atomic_path, write_json_atomic
from plmscale.locdata import ALPHABET, SPLITS, Log, TableDataset, _key

__all__ = ["convert_dataset", "load_split"]


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
