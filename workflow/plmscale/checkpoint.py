"""Training checkpoints that survive a killed job: two-level commit, verification and retention.

Layout of a run's checkpoint root (kept outside Snakemake's declared outputs, which Snakemake deletes
when a job fails)::

    <root>/step-00000120/        a committed checkpoint (the step = optimizer updates done)
        model.pt                 model state_dict
        optimizer.pt             optimizer state_dict
        rng.pt                   torch (and CUDA) RNG states
        trainer.json             step, settings fingerprint, metric records so far, seconds trained
        COMMITTED                written last: step and sha256 of every other file
    <root>/step-00000140.tmp/    being written (or left by a SIGKILL): never read, removed on start

A checkpoint is written into ``step-XXXXXXXX.tmp``, every file is fsynced, the ``COMMITTED`` marker is
written and fsynced last, and the directory is then renamed to its final name.  Only directories with
a marker whose checksums match are loaded.  The newest ``keep`` committed checkpoints are kept; older
ones are deleted only after the new one is committed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from plmscale.atomic import _fsync_dir, _fsync_file, sha256_file

COMMITTED = "COMMITTED"
TRAINER_STATE = "trainer.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")

__all__ = [
    "COMMITTED",
    "CheckpointError",
    "clean_uncommitted",
    "committed_checkpoints",
    "load_checkpoint",
    "prune",
    "save_checkpoint",
    "step_dir_name",
]


class CheckpointError(RuntimeError):
    """No committed checkpoint could be read although some exist."""


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def committed_checkpoints(root: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every committed checkpoint under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        m = _STEP_DIR.match(path.name)
        if m and path.is_dir() and (path / COMMITTED).is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def clean_uncommitted(root: str | os.PathLike[str], log: Callable[[str], Any] = print) -> list[str]:
    """Remove half-written checkpoints (``*.tmp`` dirs, step dirs without a marker); returns their names."""
    root = Path(root)
    removed = []
    if not root.is_dir():
        return removed
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        half_written = path.name.endswith(".tmp") or (
            _STEP_DIR.match(path.name) and not (path / COMMITTED).is_file()
        )
        if half_written:
            shutil.rmtree(path)
            removed.append(path.name)
            log(f"removed uncommitted checkpoint {path.name}")
    return removed


def _write_torch(obj: Any, path: Path) -> None:
    torch.save(obj, path)
    _fsync_file(path)


def save_checkpoint(
    root: str | os.PathLike[str],
    step: int,
    *,
    model_state: dict,
    optimizer_state: dict,
    rng_state: dict,
    trainer_state: dict,
    keep: int = 2,
) -> Path:
    """Write, commit and rename one checkpoint, then keep only the newest ``keep``; returns its path."""
    if keep < 2:
        raise ValueError(f"keep={keep}: keep at least 2 checkpoints (the newest may be half-written)")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f"{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _write_torch(model_state, tmp / "model.pt")
    _write_torch(optimizer_state, tmp / "optimizer.pt")
    _write_torch(rng_state, tmp / "rng.pt")
    state_path = tmp / TRAINER_STATE
    state_path.write_text(json.dumps({**trainer_state, "step": step}, allow_nan=True))
    _fsync_file(state_path)
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
    marker = tmp / COMMITTED
    marker.write_text(json.dumps({"step": step, "sha256": files}, indent=1) + "\n")
    _fsync_file(marker)
    _fsync_dir(tmp)
    if final.exists():  # a checkpoint of the same step from an earlier attempt: identical by construction
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(root)
    prune(root, keep)
    return final


def prune(root: str | os.PathLike[str], keep: int = 2) -> list[Path]:
    """Delete all but the newest ``keep`` committed checkpoints; returns the deleted paths."""
    old = [path for _, path in committed_checkpoints(root)[:-keep]]
    for path in old:
        # un-commit first, so a kill during rmtree leaves a dir that is cleaned, never half-loaded
        (path / COMMITTED).unlink()
        shutil.rmtree(path)
    return old


def _verify(path: Path) -> str | None:
    """None if the checkpoint at ``path`` matches its marker, else what is wrong with it."""
    try:
        marker = json.loads((path / COMMITTED).read_text())
    except (OSError, ValueError) as err:
        return f"{path / COMMITTED}: unreadable marker ({err})"
    for name, digest in marker.get("sha256", {}).items():
        file = path / name
        if not file.is_file():
            return f"{file}: missing"
        if sha256_file(file) != digest:
            return f"{file}: checksum mismatch (truncated or corrupted)"
    return None


def load_checkpoint(
    root: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", log: Callable = print
) -> tuple[Path, dict] | None:
    """The newest committed checkpoint whose files verify, as ``(path, state)``; None if there is none.

    ``state`` has ``model``, ``optimizer``, ``rng`` and ``trainer`` (the JSON).  A corrupted checkpoint
    is skipped with a warning naming the file; if every committed checkpoint is corrupted this raises
    ``CheckpointError`` rather than silently restarting from scratch.
    """
    found = committed_checkpoints(root)
    problems = []
    for _, path in reversed(found):
        problem = _verify(path)
        if problem is not None:
            log(f"WARNING: skipping checkpoint {path.name}: {problem}")
            problems.append(problem)
            continue
        state = {
            name: torch.load(path / f"{name}.pt", map_location=map_location, weights_only=True)
            for name in ("model", "optimizer", "rng")
        }
        state["trainer"] = json.loads((path / TRAINER_STATE).read_text())
        return path, state
    if problems:
        raise CheckpointError(
            f"every committed checkpoint under {root} is corrupted ({'; '.join(problems)}); "
            "delete the directory to restart the run from scratch"
        )
    return None
