"""Hardware benchmark of the ProtST-on-Gaudi-2 study: inference and fine-tuning time per device and count.

Inference (the blog's first experiment): every protein of a test split, batch size 1, the model cast to
bf16 ("full bfloat16 precision"; fp32 if asked), on one device.  Two padding policies: ``max_length``
pads every protein to ``max_length`` tokens as optimum-habana's ``run_zero_shot_eval.py --max_seq_length
1024`` does (static shapes: what Gaudi graphs and CUDA graphs like), ``none`` feeds each protein at its
own length (truncated to ``max_length``).  A warm-up pass over the first ``warmup`` proteins (graph
capture, ``torch.compile``, allocator growth) is timed apart; the timed pass then covers every protein and
synchronises the device at both ends.  With a trained head (the frozen-backbone classifier of the
downstream stage) the predictions give the accuracy, which must agree across devices (the blog: 0.44 on
both).

Fine-tuning (the blog's second experiment): ``epochs`` epochs of :func:`plmscale.finetune.train_classifier`
on the training split (backbone forward in every step, ``cache_features=False``), on 1, 2, 4, 8 processes
(torchrun/srun, DDP with gloo/nccl/hccl); the first epoch (warm-up) is reported apart, the rest give the
wall time per epoch and samples/s.  Scaling efficiency = samples/s on n devices / (n x samples/s on one).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from plmscale.backbones import Backbone, pad_batch
from plmscale.devices import describe_device, device_name, hpu_module, synchronize
from plmscale.distributed import DistInfo
from plmscale.finetune import Classifier, FinetuneSettings, Split, train_classifier

PADDINGS = ("max_length", "none")


def _prepare(
    model: Classifier, device: torch.device, precision: str, *, compile_model: bool, hpu_graphs: bool
):
    model = model.to(device).eval()
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    runner: Any = model
    if hpu_graphs:
        if device.type != "hpu":
            raise ValueError(f"hwbench.hpu_graphs is for Gaudi; device is {device.type}: set it false")
        hthpu, note = hpu_module()
        if hthpu is None:
            raise RuntimeError(f"hwbench.hpu_graphs needs habana_frameworks.torch.hpu: {note}")
        runner = hthpu.wrap_in_hpu_graph(model)  # Intel: HPU graphs for inference
    if compile_model:
        runner = torch.compile(runner, dynamic=False)
    return runner


@torch.no_grad()
def _pass(runner, backbone: Backbone, rows: Sequence[np.ndarray], device: torch.device, pad_to: int | None):
    preds = []
    for row in rows:
        ids, attention, residue = (
            t.to(device) for t in pad_batch([row], backbone.pad_id, backbone.special_ids, pad_to=pad_to)
        )
        preds.append(int(runner(ids, attention, residue).argmax(-1).item()))
    return preds


def inference_benchmark(
    backbone: Backbone,
    split: Split,
    n_classes: int,
    *,
    head_state: dict[str, torch.Tensor] | None,
    device: torch.device,
    precision: str,
    max_length: int,
    warmup: int = 8,
    paddings: Sequence[str] = PADDINGS,
    compile_model: bool = False,
    hpu_graphs: bool = False,
) -> list[dict[str, Any]]:
    """One row per padding policy: warm-up and timed wall time, sequences/s, tokens/s, accuracy."""
    for padding in paddings:
        if padding not in PADDINGS:
            raise ValueError(f"hwbench padding {padding!r} is not one of {PADDINGS}")
    model = Classifier(backbone, n_classes)
    if head_state is not None:
        model.head.load_state_dict(head_state)
    runner = _prepare(model, device, precision, compile_model=compile_model, hpu_graphs=hpu_graphs)
    rows = backbone.tokenize(split.sequences, max_length)
    real_tokens = int(sum(len(r) for r in rows))
    out = []
    limit = min(max_length, backbone.max_positions)  # the tokenizer truncates here too
    for padding in paddings:
        pad_to = limit if padding == "max_length" else None
        synchronize(device)
        t0 = time.perf_counter()
        _pass(runner, backbone, rows[:warmup], device, pad_to)
        synchronize(device)
        warmup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = _pass(runner, backbone, rows, device, pad_to)
        synchronize(device)
        wall_s = time.perf_counter() - t0
        fed_tokens = len(rows) * pad_to if pad_to is not None else real_tokens
        out.append(
            {
                "device": device.type,
                "device_name": device_name(device),
                "device_description": describe_device(device),
                "padding": padding,
                "max_length": limit,
                "precision": precision,
                "n_sequences": len(rows),
                "warmup_sequences": min(warmup, len(rows)),
                "warmup_s": warmup_s,
                "wall_s": wall_s,
                "seq_per_s": len(rows) / wall_s,
                "tokens_per_s": real_tokens / wall_s,
                "padded_tokens_per_s": fed_tokens / wall_s,
                "test_accuracy": float(np.mean(np.asarray(preds) == split.labels))
                if head_state is not None
                else None,
                "compile": compile_model,
                "hpu_graphs": hpu_graphs,
            }
        )
    return out


def finetune_benchmark(
    backbone: Backbone,
    splits: dict[str, Split],
    n_classes: int,
    settings: FinetuneSettings,
    *,
    epochs: int,
    device: torch.device,
    precision: str,
    dist: DistInfo,
) -> dict[str, Any]:
    """Wall time per epoch and samples/s of ``epochs`` training epochs on ``dist.world_size`` processes."""
    if epochs < 1:
        raise ValueError(f"hwbench.epochs = {epochs} must be >= 1")
    outcome = train_classifier(
        backbone,
        splits,
        n_classes,
        settings,
        device=device,
        precision=precision,
        dist=dist,
        time_only_epochs=epochs,
        log=print if dist.rank == 0 else (lambda _m: None),
    )
    seconds = [h["seconds"] for h in outcome.history]
    timed = seconds[1:] or seconds  # the first epoch is the warm-up when there are more
    samples = outcome.history[-1]["samples"]
    per_epoch = statistics.median(timed)
    return {
        "device": device.type,
        "device_name": device_name(device),
        "device_description": describe_device(device),
        "n_devices": dist.world_size,
        "method": settings.method,
        "precision": precision,
        "batch_size_per_device": settings.batch_size,
        "max_length": settings.max_length,
        "pad_to_max_length": settings.pad_to_max_length,
        "epochs": epochs,
        "epochs_timed": len(timed),
        "warmup_epoch_s": seconds[0],
        "epoch_seconds": seconds,
        "wall_s_per_epoch": per_epoch,
        "samples_per_epoch": samples,
        "samples_per_s": samples / per_epoch,
    }


def scaling_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds ``speedup_vs_one`` and ``scaling_efficiency`` (samples/s on n / (n x samples/s on 1)) per
    device type; a device without its one-device run gets None."""
    one = {r["device"]: r["samples_per_s"] for r in rows if r["n_devices"] == 1}
    out = []
    for r in sorted(rows, key=lambda r: (r["device"], r["n_devices"])):
        base = one.get(r["device"])
        speedup = r["samples_per_s"] / base if base else None
        out.append(
            {
                **r,
                "speedup_vs_one": speedup,
                "scaling_efficiency": speedup / r["n_devices"] if speedup is not None else None,
            }
        )
    return out
