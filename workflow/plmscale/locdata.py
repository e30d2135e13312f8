"""Downstream localization data sets (ProtST's DeepLoc-derived tables): the data-set spec.

The ProtST study fine-tunes on two tables published on the Hugging Face hub,
``mila-intel/ProtST-SubcellularLocalization`` (10 classes; 8,420 / 2,811 / 2,773 proteins in
train / valid / test) and ``mila-intel/ProtST-BinaryLocalization`` (membrane-bound vs soluble; about
5,161 / 1,727 / 1,746).  Their files have the columns ``prot_seq`` (residues separated by a space,
"M K T A Y") and ``localization`` (the integer label id); the binary CSV also has a leading index column.

:class:`TableDataset` is one entry of the config's ``downstream.datasets`` (one file per split, its
format, the column names, the class names indexed by label id, the expected counts).

Downloading the split files, with a lock file of observed checksums: :mod:`plmscale.lockfile`.
Checking and converting them into one Parquet with a JSON report: :mod:`plmscale.locconvert`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from plmscale.download import SCHEMES

__all__ = [
    "ALPHABET",
    "FORMATS",
    "SPLITS",
    "FileSpec",
    "TableDataset",
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
