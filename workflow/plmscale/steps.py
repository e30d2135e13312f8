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

from plmscale import attention, devices
from plmscale.data import IGNORE_INDEX, Batch, PackedStream, Rows, make_batch
from plmscale.distributed import DistInfo, all_reduce_sum, maybe_no_sync
from plmscale.loader import Prefetcher

if TYPE_CHECKING:
    from plmscale.settings import TrainSettings

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
    stream: PackedStream, run: TrainSettings, info: DistInfo, micro_rows: int, step: int
) -> StepInput:
    """The input of optimizer step ``step``: a pure function of ``(seed, step)``, whatever the split."""
    rows = stream.rows(step * run.batch_rows, run.batch_rows)
    rng = np.random.default_rng([run.seed, TRAIN_STREAM, step])
    batch, global_scored = local_batch(rows, run.objective, rng, run.mask_ratio, info.rank, info.world_size)
    n = batch.input_ids.shape[0]
    micro = tuple(
        Batch(**{k: getattr(batch, k)[i : i + micro_rows] for k in Batch.__dataclass_fields__})
        for i in range(0, n, micro_rows)
    )
    return StepInput(micro, global_scored)


class StepBatches:
    """The inputs of steps ``start, start + 1, ...``, built ``prefetch`` steps ahead in a background thread
    (0: built when asked) by :class:`plmscale.loader.Prefetcher`; deterministic, and an error in the worker
    is re-raised by :meth:`get` as itself, with a note naming the step."""

    def __init__(
        self, stream: PackedStream, run: TrainSettings, info: DistInfo, micro_rows: int,
        device: torch.device, prefetch: int, start: int,
    ) -> None:  # fmt: skip
        self.device = device
        self._ahead = Prefetcher(
            lambda step: build_step(stream, run, info, micro_rows, step), start, run.num_steps, depth=prefetch
        )

    def __enter__(self) -> StepBatches:
        self._ahead.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ahead.close()

    def get(self, step: int) -> StepInput:
        return self._moved(self._ahead.get(step))

    def _moved(self, item: StepInput) -> StepInput:
        return StepInput(tuple(to_device(b, self.device) for b in item.micro_batches), item.global_scored)


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
        extra = attention.forward_kwargs(batch.segments, causal=run.objective == "clm", backend=ex.attention)
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
