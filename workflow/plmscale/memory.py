"""Memory of a training step: the device's memory, its peak use, and an early estimate of what a step
needs, so a micro-batch that cannot fit fails before the model is built."""

from __future__ import annotations

import math
import os
import resource
import sys

import torch

from plmscale.devices import PARALLEL, check_precision_name, hpu_module


class MemoryEstimateTooLarge(RuntimeError):
    """The estimated peak memory of a training step exceeds the device's memory."""


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak memory since the last reset: CUDA/Gaudi ``max_memory_allocated`` (tensors), CPU the process's
    peak resident set (``ru_maxrss``; KiB on Linux, bytes on macOS; cannot be reset)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type == "hpu":
        hthpu, _ = hpu_module()
        return None if hthpu is None else int(hthpu.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def reset_peak_memory(device: torch.device) -> None:
    """Restart peak tracking (CUDA and Gaudi; a no-op on the CPU, whose ``ru_maxrss`` cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif device.type == "hpu":
        hthpu, _ = hpu_module()
        if hthpu is not None:
            hthpu.reset_peak_memory_stats()


def device_memory_bytes(device: torch.device) -> int | None:
    """Memory of the device: CUDA ``total_memory``, Gaudi ``memory_stats()["Limit"]``, CPU physical memory
    (or the cgroup v2 limit of the job, e.g. SLURM's, when smaller)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    if device.type == "hpu":
        hthpu, _ = hpu_module()
        return None if hthpu is None else int(hthpu.memory_stats()["Limit"])
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        if limit.isdigit():
            return min(physical, int(limit))
    except OSError:
        pass
    return int(physical)


# Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models" (arXiv
# 2205.05198), eq. 1: a transformer layer stores s*b*h*(34 + 5*a*s/h) bytes of activations with 16-bit
# values (and 1-byte dropout masks): 34 bytes per token per width ~ 17 stored values.  The 5*a*s^2*b part is
# the attention scores: QK^T (2 B), softmax output (2 B) and the dropout mask (1 B); with no dropout here,
# 2 stored values per score.  With full activation checkpointing only each layer's input (1 value per token
# per width) is kept, plus one layer's full activations recomputed during backward (§4 of the paper).
ACTIVATION_VALUES_PER_TOKEN_WIDTH = 17
SCORE_VALUES_PER_ELEMENT = 2


def estimate_training_memory_bytes(
    n_params_total: int,
    layers: int,
    width: int,
    heads: int,
    micro_batch_rows: int,
    context: int,
    precision: str,
    parallel: str = "none",
    world_size: int = 1,
    activation_checkpointing: bool = False,
    *,
    dense_attention: bool = True,
    vocab_size: int = 33,
) -> dict[str, int]:
    """Estimated peak bytes of one training step on one process (an early check, not a measurement).

    - weights fp32 4 B/param, gradients 4 B, AdamW ``exp_avg`` + ``exp_avg_sq`` 8 B; divided by
      ``world_size`` under FSDP (full sharding), which also holds the gathered fp32 weights of two layers
      (current + prefetched).  DDP (world > 1) keeps gradient buckets the size of all gradients (its default
      ``gradient_as_bucket_view=False``, PyTorch DDP docs).
    - bf16 autocast caches a bf16 copy of the weights (2 B/param, sharded like them under FSDP).
    - activations (per process, ``micro_batch_rows`` rows of ``context`` tokens): ``17 * rows * T * d * L``
      values of 2 B (bf16) or 4 B (fp32) (Korthikanti et al. 2022, eq. 1); with activation checkpointing
      only ``rows * T * d * L`` values plus one layer's full activations.
    - ``dense_attention`` (SDPA with a dense ``(rows, 1, T, T)`` mask): the boolean mask, ``rows * T^2``
      bytes, and attention scores ``2 * rows * heads * T^2`` values per layer (one layer under activation
      checkpointing).  That is what the CPU's math kernel keeps; CUDA's memory-efficient kernel does not
      keep the scores, so there it is an over-estimate.  Block-sparse / varlen kernels (False): neither.
    - the logits over the vocabulary: ``bytes`` + an fp32 copy + its fp32 gradient per element.
    Returns the parts and ``total``.
    """
    check_precision_name(precision)
    if parallel not in PARALLEL:
        raise ValueError(f"train.parallel={parallel!r} is not one of {PARALLEL}")
    for name, value in (("n_params_total", n_params_total), ("layers", layers), ("width", width),
                        ("heads", heads), ("micro_batch_rows", micro_batch_rows), ("context", context),
                        ("world_size", world_size)):  # fmt: skip
        if value < 1:
            raise ValueError(f"{name}={value} must be positive")
    value_bytes = 2 if precision == "bf16" else 4
    shard = world_size if parallel == "fsdp" else 1
    rows, t, n = micro_batch_rows, context, n_params_total
    parts = {
        "weights": math.ceil(4 * n / shard),
        "gradients": math.ceil(4 * n / shard),
        "optimizer": math.ceil(8 * n / shard),
        "ddp_buckets": 4 * n if parallel == "ddp" and world_size > 1 else 0,
        "fsdp_gathered": math.ceil(2 * 4 * n / layers) if parallel == "fsdp" and world_size > 1 else 0,
        "autocast_cache": math.ceil(2 * n / shard) if precision == "bf16" else 0,
    }
    full_layer = ACTIVATION_VALUES_PER_TOKEN_WIDTH * rows * t * width * value_bytes
    scores_layer = SCORE_VALUES_PER_ELEMENT * rows * heads * t * t * value_bytes if dense_attention else 0
    if activation_checkpointing:
        parts["activations"] = layers * rows * t * width * value_bytes + full_layer
        parts["attention_scores"] = scores_layer
    else:
        parts["activations"] = layers * full_layer
        parts["attention_scores"] = layers * scores_layer
    parts["attention_mask"] = rows * t * t if dense_attention else 0
    parts["logits"] = rows * t * vocab_size * (value_bytes + 8)
    parts["total"] = sum(parts.values())
    return parts


def check_memory_fits(
    estimate: dict[str, int], available: int | None, *, fraction: float = 0.9, where: str = ""
) -> None:
    """Raise :class:`MemoryEstimateTooLarge` when ``estimate["total"]`` exceeds ``fraction`` of
    ``available`` bytes (None: unknown, no check), naming the big parts and the settings that shrink them."""
    if available is None or estimate["total"] <= fraction * available:
        return
    gib = 2**30
    parts = ", ".join(
        f"{k} {v / gib:.2f}" for k, v in sorted(estimate.items(), key=lambda kv: -kv[1]) if k != "total" and v
    )
    raise MemoryEstimateTooLarge(
        f"estimated training memory {estimate['total'] / gib:.2f} GiB per process exceeds "
        f"{fraction:.0%} of the {available / gib:.2f} GiB of {where or 'the device'} (GiB: {parts}). Fix: "
        "lower train.micro_batch_rows (activations, scores and logits scale with it), set "
        "train.activation_checkpointing: true (keeps one value per token and width per layer), or "
        "train.parallel: fsdp (shards weights, gradients and optimizer state over the processes)."
    )
