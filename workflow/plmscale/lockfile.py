"""Download of the downstream data sets (:mod:`plmscale.locdata`), checked against a lock file.

* :func:`download_dataset` downloads each split with :func:`plmscale.download.fetch`.  A checksum in the
  config is verified.  Without one, the *lock file* (a TSV that users commit next to their config) is
  consulted: its row for (dataset, split, url) supplies the sha256 to verify; with no row, the file is
  downloaded unverified once and its observed sha256 is recorded in the lock, so that every later
  download (another machine, a rerun) must match it.

The lock file has the columns :data:`LOCK_COLUMNS` (tab-separated, after a ``#`` preamble and a header);
:func:`read_lock` and :func:`write_lock` read and write it, and concurrent downloads that add rows take
turns under an exclusive ``flock`` on its directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plmscale.atomic import write_text_atomic
from plmscale.download import ChecksumMismatch, DownloadSettings, fetch
from plmscale.locdata import SPLITS, Log, TableDataset, _key

__all__ = [
    "LOCK_COLUMNS",
    "LockEntry",
    "download_dataset",
    "read_lock",
    "write_lock",
]

LOCK_COLUMNS = ("dataset", "split", "url", "sha256", "bytes", "date")


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
