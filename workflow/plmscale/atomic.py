"""Atomic file outputs: write to a temporary file in the target directory, then ``os.replace``.

A reader (or Snakemake) therefore sees either the previous file or the complete new one, never a partial
file under the final name. On an exception the temporary file is removed and the final path is untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "sha256_file", "write_json_atomic", "write_text_atomic"]

_CHUNK = 1 << 20
# errno values meaning "this filesystem cannot fsync a directory" (the rename itself has happened).
_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EBADF})


def _temp_path_for(final: Path) -> Path:
    """Return a unique hidden temporary path next to ``final`` (same directory, hence same filesystem)."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s data to stable storage (no-op if the caller did not create it)."""
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory``; filesystems that do not support directory fsync are tolerated."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in ``final``'s directory; on success rename it onto ``final``.

    The caller writes the complete content to the yielded path. If the block raises, the temporary file is
    deleted and the exception propagates; ``final`` is left as it was. If the block finishes without
    creating the temporary file, ``FileNotFoundError`` is raised (an output was promised but not written).
    """
    final = Path(final)
    tmp = _temp_path_for(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{final}: the atomic writer finished without creating {tmp.name}")
        _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` newlines untranslated) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as JSON (indent=2, sorted keys, trailing newline) to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_text_atomic(path, text)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
