"""Several processes training one model: ranks from torchrun or srun, DDP or FSDP2, and checkpoint state
that is the same whatever the parallelism.

* Ranks come from torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) or srun (``SLURM_PROCID``/
  ``SLURM_NTASKS``/``SLURM_LOCALID``); one process when neither is set.
* ``ddp``: :class:`torch.nn.parallel.DistributedDataParallel`, every rank holds the whole model and optimizer
  state; gradients are averaged over ranks.
* ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``, PyTorch docs "FSDP2"): each transformer block, then
  the root, is sharded over the ranks, so parameters, gradients and AdamW state take ``1/W`` of the memory
  per rank; gradients are averaged over ranks by the reduce-scatter, as with DDP.
* Checkpoints hold *full* state dicts keyed by parameter name (``torch.distributed.checkpoint.state_dict``
  with ``full_state_dict=True, cpu_offload=True``, gathered on rank 0): one format for one process, DDP and
  FSDP, so a run may resume under another parallelism or world size.  Loading broadcasts from rank 0.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int


def dist_info_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """Rank, world size and local rank from torchrun (RANK/WORLD_SIZE/LOCAL_RANK) or srun
    (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID); one process when neither is set."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistInfo(0, 1, 0)


@contextlib.contextmanager
def distributed(info: DistInfo, backend: str, *, always: bool = False) -> Iterator[None]:
    """Initialise (and finally destroy) the default process group when there are several ranks, or with
    ``always`` (FSDP) a one-process group on an in-memory store when there is one."""
    import torch.distributed as dist

    if dist.is_initialized() or (info.world_size == 1 and not always):
        yield
        return
    if info.world_size == 1:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"{info.world_size} ranks but {' and '.join(missing)} not set: launch with torchrun, or export "
            "MASTER_ADDR (the first node of the job) and MASTER_PORT before srun"
        )
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device, world_size: int) -> list[float]:
    """Sum a few floats over the ranks (float64; one collective)."""
    if world_size == 1:
        return values
    import torch.distributed as dist

    stats = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(stats)
    return stats.tolist()


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a plmscale (HF RoBERTa-PreLayerNorm) model: the units FSDP shards one by one."""
    base = getattr(model, "base_model", model)
    return list(base.encoder.layer)


def wrap_model(
    model: torch.nn.Module, parallel: str, device: torch.device, world_size: int
) -> tuple[torch.nn.Module, bool]:
    """The module the training step calls, and whether it is DDP (which syncs on ``no_sync`` exit).

    One process: the model itself.  ``ddp``: DistributedDataParallel around it.  ``fsdp``: FSDP2 applied in
    place to every block and then to the root (the tied token embedding and LM head share the root unit);
    with one process FSDP is applied too (on a one-process group), so the code path is a cluster's.
    """
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        assert torch.distributed.is_initialized(), "distributed(..., always=True) opens a group for FSDP"
        for block in transformer_blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model, False
    if world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids), True
    return model, False


def maybe_no_sync(net: torch.nn.Module, is_ddp: bool, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` on every micro-batch but the last, so gradients are all-reduced once per step.

    FSDP2 reduce-scatters per backward unless told otherwise (``set_requires_gradient_sync``)."""
    if is_ddp and not sync:
        return net.no_sync()
    if hasattr(net, "set_requires_gradient_sync"):
        net.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded, CPU) model and optimizer state dicts keyed by parameter name.  A collective under
    FSDP: every rank calls it; rank 0 gets the tensors (others get empty dicts with cpu_offload)."""
    return get_state_dict(model, optimizer, options=_FULL)


def full_model_state(model: torch.nn.Module) -> dict:
    """The full (unsharded, CPU) model state dict alone (for the final HF save); a collective under FSDP."""
    return get_model_state_dict(model, options=_FULL)


def load_full_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict, *,
    broadcast: bool,
) -> None:  # fmt: skip
    """Load full state dicts (from :func:`full_state`) into a possibly sharded model and its optimizer;
    with ``broadcast`` only rank 0 needs the tensors and sends each rank its part."""
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=broadcast)
    set_state_dict(
        model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=options
    )
