"""One optimizer step: the step's batch (built ahead on the host), split over processes and micro-batches,
forward under autocast, backward with DDP syncing once, clipping and the AdamW update.

Equivalence with the one-batch, one-process update: the targets of the whole global batch are built on
the host before the forward (MLM masks are drawn for all rows, then each rank takes rows ``rank, rank + W,
...``), so every process knows the global count ``n`` of scored tokens.  Each micro-batch backpropagates
``W * sum(NLL) / n``; DDP and FSDP average gradients over the ``W`` ranks, so the accumulated gradient is
``sum over the global batch of grad NLL / n`` -- the gradient of the global mean loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from plmscale import attention, devices, memory
from plmscale.data import IGNORE_INDEX, Batch, PackedStream, Rows, make_batch
from plmscale.distributed import DistInfo, all_reduce_sum, maybe_no_sync
from plmscale.flops import n_params_embedding
from plmscale.loader import Prefetcher
from plmscale.model import POSITION_OFFSET
from plmscale.tokens import VOCAB_SIZE

if TYPE_CHECKING:
    from plmscale.settings import ExecutionSettings, TrainSettings

TRAIN_STREAM = 1  # rng stream tags: keep train masking, eval masking and data order independent


def masked_lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood (nats, computed in fp32) over labelled positions, and their count."""
    flat_labels = labels.reshape(-1)
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), flat_labels, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, int((flat_labels != IGNORE_INDEX).sum())


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch on ``device`` (pinned host memory and non-blocking copies on CUDA)."""
    if device.type == "cpu":
        return batch
    pin = device.type == "cuda"
    moved = {}
    for name in Batch.__dataclass_fields__:
        tensor = getattr(batch, name)
        moved[name] = (tensor.pin_memory() if pin else tensor).to(device, non_blocking=pin)
    return Batch(**moved)


@dataclass(frozen=True)
class StepInput:
    """This process's micro-batches of one step and the scored tokens of the whole global batch."""

    micro_batches: tuple[Batch, ...]
    global_scored: int
    # per micro-batch attention kwargs built on the host ahead of the step (varlen's document offsets:
    # computing them on the device would sync it once per micro-batch); {} = built at the forward
    attention_kwargs: tuple[dict, ...]


def local_batch(
    rows: Rows, objective: str, rng: np.random.Generator, mask_ratio: float, rank: int, world_size: int
) -> tuple[Batch, int]:
    """This rank's share of a step's global batch and the global count of scored tokens."""
    full = make_batch(rows, objective, rng, mask_ratio)
    global_scored = int((full.labels != IGNORE_INDEX).sum())
    if world_size == 1:
        return full, global_scored
    mine = {k: getattr(full, k)[rank::world_size].contiguous() for k in Batch.__dataclass_fields__}
    return Batch(**mine), global_scored


def build_step(
    stream: PackedStream, run: TrainSettings, info: DistInfo, micro_rows: int, step: int,
    attention_backend: str = "sdpa",
) -> StepInput:  # fmt: skip
    """The input of optimizer step ``step``: a pure function of ``(seed, step)``, whatever the split."""
    rows = stream.rows(step * run.batch_rows, run.batch_rows)
    rng = np.random.default_rng([run.seed, TRAIN_STREAM, step])
    batch, global_scored = local_batch(rows, run.objective, rng, run.mask_ratio, info.rank, info.world_size)
    n = batch.input_ids.shape[0]
    micro = tuple(
        Batch(**{k: getattr(batch, k)[i : i + micro_rows] for k in Batch.__dataclass_fields__})
        for i in range(0, n, micro_rows)
    )
    causal = run.objective == "clm"
    extras = tuple(
        attention.forward_kwargs(b.segments, causal=causal, backend="varlen") if attention_backend == "varlen"
        else {}
        for b in micro
    )  # fmt: skip
    return StepInput(micro, global_scored, extras)


class StepBatches:
    """The inputs of steps ``start, start + 1, ...``, built ``prefetch`` steps ahead in a background thread
    (0: built when asked) by :class:`plmscale.loader.Prefetcher`; deterministic, and an error in the worker
    is re-raised by :meth:`get` as itself, with a note naming the step."""

    def __init__(
        self, stream: PackedStream, run: TrainSettings, info: DistInfo, micro_rows: int,
        device: torch.device, prefetch: int, start: int, attention_backend: str = "sdpa",
    ) -> None:  # fmt: skip
        self.device = device
        self._ahead = Prefetcher(
            lambda step: build_step(stream, run, info, micro_rows, step, attention_backend),
            start,
            run.num_steps,
            depth=prefetch,
        )

    def __enter__(self) -> StepBatches:
        self._ahead.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ahead.close()

    def get(self, step: int) -> StepInput:
        return self._moved(self._ahead.get(step))

    def _moved(self, item: StepInput) -> StepInput:
        moved = tuple(to_device(b, self.device) for b in item.micro_batches)
        dev = self.device
        kwargs = tuple(
            {k: v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
            for kw in item.attention_kwargs
        )
        return StepInput(moved, item.global_scored, kwargs)


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean NLL per scored token over the global batch
    grad_norm: float  # global gradient norm before clipping
    stop: bool  # some rank asked to stop after this step


def train_step(trainer: Any, inp: StepInput, lr: float, *, stop_vote: bool) -> StepResult:
    """One optimizer update of ``trainer`` (a ``plmscale.train._Trainer``) on ``inp``."""
    run, ex, dev = trainer.run_settings, trainer.execution, trainer.device
    world = trainer.info.world_size
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr
    scale = world / max(inp.global_scored, 1)
    mark = devices.step_marker(dev)
    loss_sum = torch.zeros((), dtype=torch.float32, device=dev)
    last = len(inp.micro_batches) - 1
    for i, batch in enumerate(inp.micro_batches):
        extra = inp.attention_kwargs[i] or attention.forward_kwargs(
            batch.segments, causal=run.objective == "clm", backend=ex.attention
        )
        with maybe_no_sync(trainer.net, trainer.is_ddp, sync=i == last):
            with devices.autocast(dev, run.precision):
                out = trainer.net(input_ids=batch.input_ids, position_ids=batch.position_ids, **extra)
            micro_sum, _ = masked_lm_loss_sum(out.logits, batch.labels)
            (micro_sum * scale).backward()
        mark()
        loss_sum += micro_sum.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), run.grad_clip)
    if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
        grad_norm = grad_norm.full_tensor()
    trainer.optimizer.step()
    mark()
    trainer.optimizer.zero_grad(set_to_none=True)
    global_sum, votes = all_reduce_sum([float(loss_sum), float(stop_vote)], dev, world)
    loss = global_sum / max(inp.global_scored, 1)
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training loss became {loss} at lr {lr:.3g}; lower train.lr (now {run.peak_lr}) or use "
            "train.precision: fp32"
        )
    return StepResult(loss=loss, grad_norm=float(grad_norm), stop=votes > 0)


# --- how a step is split and what it needs ------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, run: TrainSettings, fused: bool) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not biases and LayerNorms), fused where ``fused``."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": run.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=run.peak_lr, betas=(run.beta1, run.beta2), **kwargs)


def check_batch_split(run: TrainSettings, execution: ExecutionSettings, world_size: int) -> int:
    """Rows per micro-batch on one process; ValueError naming the setting when the batch does not split."""
    if run.batch_rows % world_size:
        raise ValueError(
            f"train.batch_rows={run.batch_rows} is not divisible by the {world_size} processes; "
            f"set batch_rows to a multiple of {world_size} or launch {run.batch_rows} processes "
            "or a divisor of it"
        )
    local_rows = run.batch_rows // world_size
    micro = execution.micro_batch_rows or local_rows
    if local_rows % micro:
        raise ValueError(
            f"train.micro_batch_rows={micro} does not divide the {local_rows} rows each of the {world_size} "
            f"processes trains per step (batch_rows={run.batch_rows}); pick a divisor of {local_rows}"
        )
    return micro


def has_fused_adamw(device: torch.device, parallel: str) -> bool:
    """Whether ``torch.optim.AdamW(fused=True)`` serves this device: CUDA and CPU have the fused kernel
    (PyTorch docs, torch.optim.AdamW ``fused``); FSDP2's DTensor parameters use the foreach path."""
    return device.type in ("cuda", "cpu") and parallel != "fsdp"


def _memory_estimate(
    run: TrainSettings, execution: ExecutionSettings, micro_rows: int, world_size: int
) -> dict[str, int]:
    n_total = run.n_params + n_params_embedding(run.shape, VOCAB_SIZE, run.context + POSITION_OFFSET)
    return memory.estimate_training_memory_bytes(
        n_total, run.shape.layers, run.shape.width, run.shape.heads, micro_rows, run.context, run.precision,
        execution.parallel, world_size, execution.activation_checkpointing,
        dense_attention=execution.attention == "sdpa",
    )  # fmt: skip


def fit_micro_batch(
    run: TrainSettings, execution: ExecutionSettings, world_size: int, device: torch.device
) -> tuple[int, dict[str, int]]:
    """Rows per micro-batch and the step's memory estimate (:func:`plmscale.memory.
    estimate_training_memory_bytes`).  ``train.micro_batch_rows: 0`` derives the micro-batch: the largest
    divisor of the local rows whose estimate fits 90% of the device's memory.  Fails before the model is
    built when even the given (or smallest) micro-batch does not fit, naming the parts and the fix."""
    local_rows = run.batch_rows // world_size
    available = memory.device_memory_bytes(device)
    if execution.micro_batch_rows == 0 and available is not None:
        for rows in sorted((d for d in range(1, local_rows + 1) if local_rows % d == 0), reverse=True):
            estimate = _memory_estimate(run, execution, rows, world_size)
            if estimate["total"] <= 0.9 * available:
                return rows, estimate
        rows = 1
    else:
        rows = execution.micro_batch_rows or local_rows
    estimate = _memory_estimate(run, execution, rows, world_size)
    memory.check_memory_fits(estimate, available, where=str(device))
    return rows, estimate
