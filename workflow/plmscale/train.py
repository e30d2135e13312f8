"""One training run of a scaling point: a fresh model trained on ``D = C / (6 N)`` tokens.

Recipe (the paper's, scaled down): AdamW (beta2 0.95, weight decay 0.1 on matrices, gradient clipping
1.0), linear warm-up then cosine decay to 10% of the peak learning rate over the run's own budget,
packed rows with attention blocked across sequences, SDPA attention, fixed seeds.  Outputs: a Hugging
Face model directory, per-step metrics (Parquet) and ``done.json``, written last.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from plmscale.atomic import write_json_atomic
from plmscale.data import IGNORE_INDEX, PackedStream, make_batch, make_documents
from plmscale.flops import ModelShape, flops_per_token_with_attention, n_params_non_embedding, training_flops
from plmscale.model import build_model, count_parameters
from plmscale.tokens import VOCAB_SIZE, TokenStore, concat_stores, esm_tokenizer, write_vocab

TRAIN_STREAM = 1  # rng stream tags: keep train masking, eval masking and data order independent
EVAL_STREAM = 2


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a run; the values Snakemake passes as params."""

    objective: str
    shape: ModelShape
    flops_budget: float
    context: int
    batch_rows: int
    peak_lr: float
    warmup_fraction: float
    min_lr_ratio: float
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    mask_ratio: float
    seed: int
    eval_points: int
    eval_max_tokens: int
    eval_seed: int

    @property
    def tokens_per_step(self) -> int:
        return self.batch_rows * self.context

    @property
    def n_params(self) -> int:
        return n_params_non_embedding(self.shape, VOCAB_SIZE)

    @property
    def num_steps(self) -> int:
        """Steps to consume ``D = C / (6 N)`` tokens, rounded up (at least one)."""
        return max(1, math.ceil(self.flops_budget / (6.0 * self.n_params) / self.tokens_per_step))

    @property
    def warmup_steps(self) -> int:
        return max(1, round(self.warmup_fraction * self.num_steps))


def learning_rate(step: int, total_steps: int, peak: float, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to ``min_ratio * peak`` at the
    last step (Hoffmann et al. 2022 §3: the cosine cycle matches the run's own length)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def eval_steps(total_steps: int, points: int) -> list[int]:
    """Log-spaced steps (0-based, after the update) at which validation loss is measured; always the last."""
    if points <= 1:
        return [total_steps - 1]
    marks = np.unique(np.round(np.geomspace(1, total_steps, num=points)).astype(int)) - 1
    return sorted({*marks.tolist(), total_steps - 1})


def open_tokens(shard_dirs: list[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ids and offsets of several token-store shards."""
    return concat_stores([TokenStore.open(Path(d)) for d in shard_dirs])


def masked_lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood (nats) over labelled positions, and their count."""
    flat_labels = labels.reshape(-1)
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), flat_labels, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, int((flat_labels != IGNORE_INDEX).sum())


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    objective: str,
    stream: PackedStream,
    *,
    max_tokens: int,
    batch_rows: int,
    mask_ratio: float,
    eval_seed: int,
) -> tuple[float, int]:
    """Mean loss in nats per scored token over the first ``max_tokens`` of a validation stream.

    The rows, and for MLM the masked positions, depend only on ``eval_seed`` and the row index, so
    every run of an objective is scored on exactly the same tokens.
    """
    was_training = model.training
    model.eval()
    n_rows = max(1, min(stream.rows_per_epoch, max_tokens // stream.context))
    total, count = 0.0, 0
    for first in range(0, n_rows, batch_rows):
        rows = stream.rows(first, min(batch_rows, n_rows - first))
        rng = np.random.default_rng([eval_seed, EVAL_STREAM, first])
        batch = make_batch(rows, objective, rng, mask_ratio)
        out = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        )
        loss_sum, n = masked_lm_loss_sum(out.logits, batch.labels)
        total += float(loss_sum)
        count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("validation set produced no scored tokens; enlarge the validation split")
    return total / count, count


def _optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.peak_lr, betas=(settings.beta1, settings.beta2))


def save_model(model: torch.nn.Module, model_dir: Path) -> None:
    """Save in Hugging Face format (config.json, model.safetensors, ESM-2 vocabulary) atomically."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir = Path(model_dir)
    tmp = model_dir.parent / f".{model_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    write_vocab(tmp / "vocab.txt")
    esm_tokenizer(tmp).save_pretrained(tmp)
    model_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(tmp.iterdir()):
        item.replace(model_dir / item.name)
    tmp.rmdir()


def train_run(
    settings: TrainSettings,
    train_shards: list[str | Path],
    valid_shards: list[str | Path],
    *,
    model_dir: Path,
    metrics_path: Path,
    done_path: Path,
    threads: int = 1,
    log=print,
) -> dict:
    """Train one scaling point and write its outputs; returns the content of ``done.json``."""
    torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    train_docs = make_documents(*open_tokens(train_shards), settings.context)
    valid_docs = make_documents(*open_tokens(valid_shards), settings.context)
    train_stream = PackedStream(train_docs, settings.context, settings.seed, drop_last=True)
    valid_stream = PackedStream(valid_docs, settings.context, settings.eval_seed, drop_last=False)

    model = build_model(settings.shape, settings.objective, settings.context, settings.seed)
    n_params, n_embedding = count_parameters(model)
    assert n_params == settings.n_params, (n_params, settings.n_params)
    optimizer = _optimizer(model, settings)
    total_steps = settings.num_steps
    evals = set(eval_steps(total_steps, settings.eval_points))
    log(
        f"run {settings.objective} C={settings.flops_budget:.3g} shape={settings.shape} N={n_params:,} "
        f"steps={total_steps} tokens/step={settings.tokens_per_step} "
        f"train_rows/epoch={train_stream.rows_per_epoch}"
    )
    records: list[dict] = []
    model.train()
    started = time.perf_counter()
    for step in range(total_steps):
        lr = learning_rate(step, total_steps, settings.peak_lr, settings.warmup_steps, settings.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = train_stream.rows(step * settings.batch_rows, settings.batch_rows)
        rng = np.random.default_rng([settings.seed, TRAIN_STREAM, step])
        batch = make_batch(rows, settings.objective, rng, settings.mask_ratio)
        out = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        )
        loss_sum, n_scored = masked_lm_loss_sum(out.logits, batch.labels)
        loss = loss_sum / max(n_scored, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_loss = float(loss.detach())
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss became {train_loss} at step {step}; lower train.lr (now {settings.peak_lr})"
            )
        num_tokens = (step + 1) * settings.tokens_per_step
        val_loss = None
        if step in evals:
            val_loss, _ = validation_loss(
                model,
                settings.objective,
                valid_stream,
                max_tokens=settings.eval_max_tokens,
                batch_rows=settings.batch_rows,
                mask_ratio=settings.mask_ratio,
                eval_seed=settings.eval_seed,
            )
            log(
                f"step {step + 1}/{total_steps} tokens={num_tokens} "
                f"train_loss={train_loss:.4f} val_loss={val_loss:.4f}"
            )
        records.append(
            {
                "step": step + 1,
                "num_tokens": num_tokens,
                "flops": training_flops(n_params, num_tokens),
                "lr": lr,
                "train_loss": train_loss,
                "val_loss": val_loss,
            }
        )
    seconds = time.perf_counter() - started
    num_tokens = total_steps * settings.tokens_per_step
    tokens_per_second = num_tokens / seconds
    save_model(model, model_dir)
    metrics = pl.DataFrame(records, schema_overrides={"val_loss": pl.Float64})
    tmp_metrics = metrics_path.with_name(f".{metrics_path.name}.tmp")
    metrics.write_parquet(tmp_metrics)
    tmp_metrics.replace(metrics_path)
    done = {
        "objective": settings.objective,
        "settings": {**asdict(settings), "shape": asdict(settings.shape)},
        "n_params_non_embedding": n_params,
        "n_params_embedding": n_embedding,
        "flops_budget": settings.flops_budget,
        "num_steps": total_steps,
        "num_tokens": num_tokens,
        "flops": training_flops(n_params, num_tokens),
        "epochs": num_tokens / train_docs.num_tokens,
        "final_train_loss": records[-1]["train_loss"],
        "final_val_loss": records[-1]["val_loss"],
        "wall_seconds": seconds,
        "tokens_per_second": tokens_per_second,
        "achieved_flops_per_second": tokens_per_second
        * flops_per_token_with_attention(settings.shape, n_params, settings.context),
        "threads": threads,
    }
    write_json_atomic(done_path, done)
    log(json.dumps({k: done[k] for k in ("num_steps", "num_tokens", "final_val_loss", "tokens_per_second")}))
    return done
