"""Resume that cannot mix runs: a checkpoint records the identity of its inputs, and a resume compares it.

The identity of a run is its run settings (:class:`plmscale.settings.TrainSettings`), the sha256 of every
token shard's ``manifest.json`` (which holds the sha256 of the shard's files, so it names the exact tokens)
and the digest of the training code (:func:`plmscale.provenance.code_digest`).  When any of them differs
from the checkpoint's, the resume is refused with :class:`InputsChanged` naming what changed
(``train.on_input_change: refuse``, the default) or the checkpoints are deleted and the run starts fresh,
saying so (``restart``).  Execution settings (device, kernels, micro-batching, parallelism) may change.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from plmscale.checkpoint import TRAINER_STATE, clean_uncommitted, load_checkpoint, save_checkpoint
from plmscale.distributed import DistInfo, barrier, full_state, load_full_state
from plmscale.provenance import code_digest
from plmscale.settings import ExecutionSettings, TrainSettings

KEEP_CHECKPOINTS = 2
TRAINING_CODE = "train_cli"  # the entry module: the digest covers every package module it imports


class InputsChanged(ValueError):
    """A checkpoint was made from other inputs, settings or code than the run now has."""


def run_identity(run: TrainSettings, streams: Any) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (see the module docstring)."""
    return {
        "run": run.to_dict(),
        "code": code_digest(TRAINING_CODE),
        "train_tokens": dict(streams.train_identity),
        "valid_tokens": dict(streams.valid_identity),
        "mixture": dict(streams.mixture),
    }


def identity_changes(saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a checkpoint's identity and the run's; [] when they match."""
    if saved is None:
        return ["the checkpoint records no input identity (written by an older plmscale)"]
    changes = []
    old_run, new_run = saved.get("run", {}), current["run"]
    for key in sorted(set(old_run) | set(new_run)):
        if old_run.get(key) != new_run.get(key):
            changes.append(f"run setting {key}: {old_run.get(key)!r} -> {new_run.get(key)!r}")
    if saved.get("mixture", {}) != current["mixture"]:
        changes.append(f"source proportions {saved.get('mixture', {})} -> {current['mixture']}")
    if saved.get("init_sha256") != current.get("init_sha256"):
        changes.append(f"initial weights sha256 {saved.get('init_sha256')} -> {current.get('init_sha256')}")
    if saved.get("code") != current["code"]:
        changes.append(f"training code digest {saved.get('code')} -> {current['code']}")
    for part in ("train_tokens", "valid_tokens"):
        old, new = saved.get(part, {}), current[part]
        for shard in sorted(set(old) | set(new)):
            if old.get(shard) != new.get(shard):
                what = "added" if shard not in old else "removed" if shard not in new else "changed"
                changes.append(f"{part.replace('_', ' ')} shard {shard} {what} (manifest sha256)")
    return changes


def _broadcast(value: Any, info: DistInfo) -> Any:
    if info.world_size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def resume_state(
    root: Path, identity: Mapping[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    info: DistInfo, execution: ExecutionSettings, device: torch.device, log: Callable,
) -> dict | None:  # fmt: skip
    """Load the newest committed checkpoint of ``root`` into ``model`` and ``optimizer`` when its identity
    matches; returns its trainer state (with ``name``), or None to start from step 0.

    Under FSDP only rank 0 reads the tensors and broadcasts each rank its shard."""
    if info.rank == 0:
        clean_uncommitted(root, log)
    barrier(info.world_size)
    broadcast = execution.parallel == "fsdp" and info.world_size > 1
    found = load_checkpoint(root, map_location="cpu", log=log) if info.rank == 0 or not broadcast else None
    name = _broadcast(None if found is None else found[0].name, info)
    if name is None:
        return None
    trainer = json.loads((root / name / TRAINER_STATE).read_text())
    changes = identity_changes(trainer.get("identity"), identity)
    if changes:
        what = "; ".join(changes)
        if execution.on_input_change == "refuse":
            raise InputsChanged(
                f"checkpoint {root / name} was made from other inputs than this run has: {what}. Resuming "
                "would mix two runs in one curve. Fix: delete the checkpoint directory to start over, or set "
                "train.on_input_change: restart to do that automatically"
            )
        log(f"starting fresh, discarding the checkpoints in {root}: {what} (train.on_input_change: restart)")
        barrier(info.world_size)
        if info.rank == 0:
            shutil.rmtree(root, ignore_errors=True)
        barrier(info.world_size)
        return None
    state = found[1] if found is not None else {"model": {}, "optimizer": {}, "rng": None}
    load_full_state(model, optimizer, state["model"], state["optimizer"], broadcast=broadcast)
    if state["rng"] is not None:
        torch.set_rng_state(state["rng"]["torch"].cpu())
    barrier(info.world_size)  # nobody rotates checkpoints while another rank still reads one
    return {**trainer, "name": name}


def save_state(
    root: Path, step_done: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    trainer_state: dict, info: DistInfo,
) -> Path | None:  # fmt: skip
    """Checkpoint after ``step_done`` updates: full state gathered on rank 0 (a collective under FSDP),
    written and committed by rank 0; every rank waits for the commit."""
    model_state, optim_state = full_state(model, optimizer)
    path = None
    if info.rank == 0:
        path = save_checkpoint(
            root, step_done, model_state=model_state, optimizer_state=optim_state, rng_state=_rng_state(),
            trainer_state=trainer_state, keep=KEEP_CHECKPOINTS,
        )  # fmt: skip
    barrier(info.world_size)
    return path
