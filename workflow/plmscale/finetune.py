"""Sequence classification on a protein LM backbone: frozen backbone + MLP head, or full fine-tuning.

The recipe is ProtST's property-prediction setting as the Gaudi blog ran it (``localization_fix.yaml``;
optimum-habana ``run_sequence_classification.py``): mean readout over the residues of the last hidden
states, a two-layer MLP head (Linear(H, H), ReLU, Linear(H, K)), cross-entropy, Adam(W) at a constant
learning rate (5e-5), batch 32 per device, bf16 autocast, evaluation on the validation split after every
epoch and the best epoch's weights kept (``load_best_model_at_end``).  We add early stopping (``patience``
epochs without a better validation accuracy) so that runs do not always last ``max_epochs``.

``frozen``: the backbone runs in eval mode without gradients and only the head trains.  With
``cache_features`` the mean-pooled features are computed once and the head trains on them; this is exactly
what running the frozen backbone every step computes (eval mode, so no dropout: the same inputs give the
same features), at a fraction of the cost.  The hardware benchmark sets ``cache_features=False`` to time
what the blog timed (the backbone forward in every step).  ``full``: every weight trains.

Several processes (torchrun / srun, one per device) train data-parallel (DDP): every global batch of
``batch_size x world_size`` proteins is split between the ranks and each rank's summed loss is scaled by
``world_size / global batch`` so that DDP's gradient average equals the gradient of the global batch mean,
whatever the shard sizes; the run is then the one-process run with the global batch (up to float rounding).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from plmscale.backbones import Backbone, mean_readout, pad_batch
from plmscale.devices import autocast, step_marker, synchronize
from plmscale.distributed import DistInfo
from plmscale.downstream_specs import METHODS, FinetuneSettings  # noqa: F401  (re-exported)
from plmscale.metrics import score

SINGLE_PROCESS = DistInfo(0, 1, 0)


@dataclass(frozen=True)
class Split:
    sequences: tuple[str, ...]
    labels: np.ndarray  # int64 label ids


@dataclass
class FinetuneOutcome:
    """What a training run measured; ``predictions`` are the test split's, in order."""

    predictions: np.ndarray
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)


class Classifier(torch.nn.Module):
    """Backbone, mean readout over residues, two-layer MLP head."""

    def __init__(self, backbone: Backbone, n_classes: int) -> None:
        super().__init__()
        hidden = backbone.hidden_size
        self.backbone = backbone
        self.head = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_classes)
        )

    def features(
        self, input_ids: torch.Tensor, attention: torch.Tensor, residue: torch.Tensor
    ) -> torch.Tensor:
        return mean_readout(self.backbone(input_ids, attention), residue)

    def forward(
        self, input_ids: torch.Tensor, attention: torch.Tensor, residue: torch.Tensor
    ) -> torch.Tensor:
        features = self.features(input_ids, attention, residue)  # fp32; the head may be cast (bf16 inference)
        return self.head(features.to(self.head[0].weight.dtype))


def parameter_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes, in name order (to prove a frozen backbone did not change)."""
    digest = hashlib.sha256()
    for name, param in sorted(module.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _shard(indices: np.ndarray, dist: DistInfo) -> np.ndarray:
    return np.array_split(indices, dist.world_size)[dist.rank]


def _gather(local: list[Any], dist: DistInfo) -> list[Any]:
    if dist.world_size == 1:
        return local
    import torch.distributed as tdist

    parts: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(parts, local)
    return [item for part in parts for item in part]


class _Batches:
    """Turns protein indices into the tensors of the trained module (token batches or cached features)."""

    def __init__(self, backbone: Backbone, rows: list[np.ndarray], features: torch.Tensor | None, pad_to):
        self.backbone, self.rows, self.features, self.pad_to = backbone, rows, features, pad_to

    def __call__(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        if self.features is not None:
            return (self.features[torch.from_numpy(idx)].to(device),)
        b = self.backbone
        tensors = pad_batch([self.rows[i] for i in idx], b.pad_id, b.special_ids, pad_to=self.pad_to)
        return tuple(t.to(device) for t in tensors)


@torch.no_grad()
def embed(
    model: Classifier,
    rows: list[np.ndarray],
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
    dist: DistInfo,
    pad_to: int | None = None,
) -> torch.Tensor:
    """Mean-pooled features (float32, CPU) of every row, each rank embedding its shard."""
    model.backbone.eval()
    mark = step_marker(device)
    local = []
    mine = _shard(np.arange(len(rows)), dist)
    for first in range(0, len(mine), batch_size):
        idx = mine[first : first + batch_size]
        b = model.backbone
        tensors = [
            t.to(device) for t in pad_batch([rows[i] for i in idx], b.pad_id, b.special_ids, pad_to=pad_to)
        ]
        with autocast(device, precision):
            feats = model.features(*tensors)
        mark()
        local.extend(zip(idx.tolist(), feats.float().cpu(), strict=True))
    merged = sorted(_gather(local, dist), key=lambda item: item[0])
    return torch.stack([vec for _, vec in merged]) if merged else torch.zeros(0, model.backbone.hidden_size)


@torch.no_grad()
def predict(
    module: torch.nn.Module,
    batches: _Batches,
    n: int,
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
    dist: DistInfo,
) -> np.ndarray:
    """Predicted class of proteins 0..n-1 (each rank predicts its shard; gathered)."""
    module.eval()
    mark = step_marker(device)
    local: list[tuple[int, int]] = []
    mine = _shard(np.arange(n), dist)
    for first in range(0, len(mine), batch_size):
        idx = mine[first : first + batch_size]
        with autocast(device, precision):
            logits = module(*batches(idx, device))
        mark()
        local.extend(zip(idx.tolist(), logits.argmax(-1).cpu().tolist(), strict=True))
    merged = sorted(_gather(local, dist))
    return np.asarray([p for _, p in merged], dtype=np.int64)


def _host_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's weights copied to host memory (the best epoch's, kept while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _global_batches(n: int, batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch] for i in range(0, n, batch)]


class _Run:
    """The trained module (the head on cached features, or the whole classifier), its DDP wrapper, optimizer
    and batches: one training epoch and the predictions of a split."""

    def __init__(
        self,
        model: Classifier,
        splits: Mapping[str, Split],
        settings: FinetuneSettings,
        *,
        device: torch.device,
        precision: str,
        dist: DistInfo,
    ) -> None:
        s = self.settings = settings
        self.device, self.precision, self.dist = device, precision, dist
        self.frozen = s.method == "frozen"
        backbone = self.backbone = model.backbone
        backbone.requires_grad_(not self.frozen)
        rows = {name: backbone.tokenize(split.sequences, s.max_length) for name, split in splits.items()}
        pad_to = s.max_length if s.pad_to_max_length else None
        cached = self.frozen and s.cache_features
        feats: dict[str, torch.Tensor | None] = dict.fromkeys(rows)
        for name in rows if cached else ():
            feats[name] = embed(
                model,
                rows[name],
                batch_size=s.batch_size,
                device=device,
                precision=precision,
                dist=dist,
                pad_to=pad_to,
            )
        self.trained: torch.nn.Module = model.head if cached else model
        self.batches = {name: _Batches(backbone, rows[name], feats[name], pad_to) for name in rows}
        self.labels = {
            name: torch.from_numpy(split.labels.astype(np.int64)) for name, split in splits.items()
        }
        self.net = self.trained
        if dist.world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            # full: a checkpoint may carry modules its forward never uses (EsmModel's contact head)
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.trained, device_ids=ids, find_unused_parameters=not self.frozen
            )
        params = [p for p in self.trained.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        self.mark = step_marker(device)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training split in the epoch's seeded order: loss, seconds, samples."""
        s, dist, device = self.settings, self.dist, self.device
        self.trained.train()
        if self.frozen:
            self.backbone.eval()  # no dropout in a frozen encoder, as in the cached path
        synchronize(device)
        t0 = time.perf_counter()
        loss_sum, seen, skipped = 0.0, 0, 0
        n_train = len(self.labels["train"])
        for global_idx in _global_batches(n_train, s.batch_size * dist.world_size, s.seed, epoch):
            if len(global_idx) < dist.world_size:  # a rank would get no protein: skip this short tail
                skipped += len(global_idx)
                continue
            idx = _shard(global_idx, dist)
            target = self.labels["train"][torch.from_numpy(idx)].to(device)
            with autocast(device, self.precision):
                logits = self.net(*self.batches["train"](idx, device))
            ce = torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum")
            (ce * (dist.world_size / len(global_idx))).backward()
            self.mark()
            self.optimizer.step()
            self.mark()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum += float(ce.detach())
            seen += len(idx)
        synchronize(device)
        seconds = time.perf_counter() - t0
        return {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "seconds": seconds,
            "samples": seen * dist.world_size,
            "skipped": skipped,
        }

    def predict(self, split: str) -> np.ndarray:
        return predict(
            self.trained,
            self.batches[split],
            len(self.labels[split]),
            batch_size=self.settings.batch_size,
            device=self.device,
            precision=self.precision,
            dist=self.dist,
        )


def _log_line(record: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())


def _fit(run: _Run, valid_labels: np.ndarray, log: Callable[[str], Any]) -> tuple[list[dict], float, int]:
    """Epochs until ``patience`` epochs bring no better validation accuracy (or ``max_epochs``); the first
    best epoch's weights are loaded back.  Returns the history, the best accuracy and its epoch."""
    s = run.settings
    best_acc, best_epoch, best_state = -1.0, 0, _host_copy(run.trained)
    history: list[dict[str, Any]] = []
    for epoch in range(1, s.max_epochs + 1):
        record = run.train_epoch(epoch)
        record["valid_accuracy"] = float(np.mean(run.predict("valid") == valid_labels))
        if record["valid_accuracy"] > best_acc:
            best_acc, best_epoch, best_state = record["valid_accuracy"], epoch, _host_copy(run.trained)
        history.append(record)
        log(_log_line(record))
        if epoch - best_epoch >= s.patience:
            log(f"early stop: no better validation accuracy for {s.patience} epochs; best epoch {best_epoch}")
            break
    run.trained.load_state_dict(best_state)
    return history, best_acc, best_epoch


def train_classifier(
    backbone: Backbone,
    splits: Mapping[str, Split],
    n_classes: int,
    settings: FinetuneSettings,
    *,
    device: torch.device,
    precision: str,
    dist: DistInfo = SINGLE_PROCESS,
    log: Callable[[str], Any] = print,
    time_only_epochs: int | None = None,
) -> FinetuneOutcome:
    """Train on ``splits['train']``, select the epoch on ``splits['valid']``, score ``splits['test']``.

    ``time_only_epochs`` (hardware benchmark): run exactly that many epochs without validation or early
    stopping and return the per-epoch wall times in the history.
    """
    torch.manual_seed(settings.seed)
    model = Classifier(backbone, n_classes).to(device)
    digest_before = parameter_digest(backbone) if settings.method == "frozen" else None
    run = _Run(model, splits, settings, device=device, precision=precision, dist=dist)
    if time_only_epochs is not None:
        history = []
        for epoch in range(1, time_only_epochs + 1):
            history.append(run.train_epoch(epoch))
            log(_log_line(history[-1]))
        return FinetuneOutcome(np.zeros(0, dtype=np.int64), {"epochs_run": len(history)}, history)
    history, best_acc, best_epoch = _fit(run, splits["valid"].labels, log)
    test_pred = run.predict("test")
    metrics = score(
        splits["train"].labels,
        splits["test"].labels,
        test_pred,
        n_classes,
        n_bootstrap=settings.n_bootstrap,
        seed=settings.seed,
    )
    metrics.update(best_epoch=best_epoch, valid_accuracy_best=best_acc, epochs_run=len(history))
    if digest_before is not None:
        metrics["backbone_unchanged"] = parameter_digest(backbone) == digest_before
        assert metrics["backbone_unchanged"], "a frozen backbone changed during training"
    head = {k: v.detach().cpu() for k, v in model.head.state_dict().items()}
    return FinetuneOutcome(test_pred, metrics, history, head)


def split_from_table(table: Any, split: str, *, limit: int | None = None) -> Split:
    """A :class:`Split` from the converted dataset Parquet's rows of ``split`` (columns sequence,
    label_id), the first ``limit`` rows if given."""
    rows = table.filter(table["split"] == split)
    if limit is not None:
        rows = rows.head(limit)
    if rows.height == 0:
        raise ValueError(f"the dataset has no {split!r} rows; check the conversion report")
    return Split(tuple(rows["sequence"].to_list()), rows["label_id"].to_numpy().astype(np.int64))
