"""One training run of a scaling point: a fresh model trained on ``D = C / (6 N)`` tokens.

Recipe (the paper's, scaled down): AdamW (beta2 0.95, weight decay 0.1 on matrices, gradient clipping
1.0), linear warm-up then cosine decay to 10% of the peak learning rate over the run's own budget,
packed rows with attention blocked across sequences, SDPA attention, fixed seeds.  Outputs: a Hugging
Face model directory, per-step metrics (Parquet) and ``done.json``, written last.

Surviving the cluster: the run checkpoints (``plmscale.checkpoint``) into a directory outside the
declared outputs every ``checkpoint_every`` steps, when its time limit comes close, and when SIGTERM or
SIGUSR1 asks it to stop; it then raises ``TrainingStopped`` (exit code 75, EX_TEMPFAIL).  The next
attempt resumes from the newest committed checkpoint and reproduces the uninterrupted run exactly: the
batch of a step is a function of ``(seed, step)``, and the checkpoint holds weights, optimizer state,
RNG states and the metric records so far.

Several processes (torchrun, or srun with one task per GPU) train one model with
DistributedDataParallel: each rank takes rows ``rank, rank + W, ...`` of the step's global batch and the
loss is normalised by the global count of scored tokens, so the update equals the single-process one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from plmscale.atomic import write_json_atomic
from plmscale.checkpoint import clean_uncommitted, committed_checkpoints, load_checkpoint, save_checkpoint
from plmscale.data import (
    IGNORE_INDEX,
    Batch,
    PackedStream,
    Rows,
    attention_mask,
    make_batch,
    make_documents,
)
from plmscale.flops import ModelShape, flops_per_token_with_attention, n_params_non_embedding, training_flops
from plmscale.model import build_model, count_parameters
from plmscale.tokens import VOCAB_SIZE, TokenStore, concat_stores, esm_tokenizer, write_vocab

TRAIN_STREAM = 1  # rng stream tags: keep train masking, eval masking and data order independent
EVAL_STREAM = 2
EX_TEMPFAIL = 75  # sysexits.h: temporary failure, retry later (the job resumes from its checkpoint)
KEEP_CHECKPOINTS = 2


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
    device = next(model.parameters()).device
    model.eval()
    n_rows = max(1, min(stream.rows_per_epoch, max_tokens // stream.context))
    total, count = 0.0, 0
    for first in range(0, n_rows, batch_rows):
        rows = stream.rows(first, min(batch_rows, n_rows - first))
        rng = np.random.default_rng([eval_seed, EVAL_STREAM, first])
        batch = _to_device(make_batch(rows, objective, rng, mask_ratio), device)
        out = model(
            input_ids=batch.input_ids, attention_mask=attention_mask(batch.segments, objective == "clm"),
            position_ids=batch.position_ids,
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


class TrainingStopped(Exception):
    """The run stopped early (signal or time limit) after committing a checkpoint; rerun to resume."""

    exit_code = EX_TEMPFAIL

    def __init__(self, reason: str, step: int, checkpoint: Path | None) -> None:
        where = f"checkpoint {checkpoint.name}" if checkpoint is not None else "NO checkpoint (no directory)"
        super().__init__(f"stopped at step {step} ({reason}); saved {where}; rerun to resume")
        self.reason, self.step, self.checkpoint = reason, step, checkpoint


class StopRequest:
    """A flag set by SIGTERM/SIGUSR1 (or by code): stop at the end of the current step."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def __bool__(self) -> bool:
        return self.reason is not None


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """While active, SIGTERM and SIGUSR1 set ``stop`` instead of killing the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, lambda signum, _frame: stop.set(signal.Signals(signum).name))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
def distributed(info: DistInfo, device: torch.device) -> Iterator[None]:
    """Initialise (and finally destroy) the default process group when there are several ranks."""
    import torch.distributed as dist

    if info.world_size == 1 or dist.is_initialized():
        yield
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"{info.world_size} ranks but {' and '.join(missing)} not set: launch with torchrun, or export "
            "MASTER_ADDR (the first node of the job) and MASTER_PORT before srun"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    return Batch(**{k: getattr(batch, k).to(device, non_blocking=True) for k in Batch.__dataclass_fields__})


def local_batch(
    rows: Rows, objective: str, rng: np.random.Generator, mask_ratio: float, rank: int, world_size: int
) -> Batch:
    """This rank's share of a step's global batch (see :func:`plmscale.data.make_batch`)."""
    return make_batch(rows, objective, rng, mask_ratio, rank=rank, world_size=world_size)


def settings_fingerprint(settings: TrainSettings) -> str:
    """Digest of everything that defines a run: a checkpoint of other settings is never resumed."""
    text = json.dumps({**asdict(settings), "shape": asdict(settings.shape)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _resolve_device(device: str | None, info: DistInfo) -> torch.device:
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", info.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def _prepare_checkpoints(root: Path, fingerprint: str, log: Callable) -> None:
    """Rank 0, before anyone loads: drop half-written checkpoints and those of other settings."""
    clean_uncommitted(root, log)
    for _, path in committed_checkpoints(root):
        try:
            theirs = json.loads((path / "trainer.json").read_text()).get("fingerprint")
        except (OSError, ValueError):
            continue  # load_checkpoint reports it
        if theirs != fingerprint:
            log(f"discarding checkpoint {path.name}: other settings ({theirs} != {fingerprint})")
            shutil.rmtree(path)


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
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    time_limit_s: float | None = None,
    time_margin_s: float = 0.0,
    started_at: float | None = None,
    keep_checkpoints: bool = False,
    device: str | None = None,
    stop: StopRequest | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train one scaling point and write its outputs; returns the content of ``done.json``.

    ``checkpoint_dir``: where checkpoints live (outside the declared outputs); the run resumes from the
    newest committed one.  ``checkpoint_every``: steps between checkpoints (0 = only on stop).
    ``time_limit_s``: seconds since ``started_at`` (``time.monotonic()``, default: now) the run may use; it
    checkpoints and raises ``TrainingStopped`` once the time left is below ``time_margin_s`` plus twice the
    longest step plus the last checkpoint's write time.  SIGTERM and SIGUSR1 stop it the same way at the
    end of the current step.  ``on_step(step)`` is called after each completed step (tests).  The
    checkpoints are deleted after the outputs are written unless ``keep_checkpoints``.
    """
    started_at = time.monotonic() if started_at is None else started_at
    stop = StopRequest() if stop is None else stop
    info = dist_info_from_env()
    if settings.batch_rows % info.world_size:
        raise ValueError(
            f"train.batch_rows={settings.batch_rows} is not divisible by the {info.world_size} processes; "
            f"set batch_rows to a multiple of {info.world_size} or launch {settings.batch_rows} processes "
            "or a divisor of it"
        )
    dev = _resolve_device(device, info)
    with stop_on_signals(stop), distributed(info, dev):
        return _train(
            settings, train_shards, valid_shards, model_dir=Path(model_dir), metrics_path=Path(metrics_path),
            done_path=Path(done_path), threads=threads, log=log if info.rank == 0 else (lambda *a, **k: None),
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
            checkpoint_every=checkpoint_every, time_limit_s=time_limit_s, time_margin_s=time_margin_s,
            started_at=started_at, keep_checkpoints=keep_checkpoints, info=info, device=dev, stop=stop,
            on_step=on_step,
        )  # fmt: skip


def _train(
    settings: TrainSettings,
    train_shards,
    valid_shards,
    *,
    model_dir: Path,
    metrics_path: Path,
    done_path: Path,
    threads: int,
    log,
    checkpoint_dir: Path | None,
    checkpoint_every: int,
    time_limit_s: float | None,
    time_margin_s: float,
    started_at: float,
    keep_checkpoints: bool,
    info: DistInfo,
    device: torch.device,
    stop: StopRequest,
    on_step,
) -> dict:
    import torch.distributed as dist

    rank, world = info.rank, info.world_size
    torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    train_docs = make_documents(*open_tokens(train_shards), settings.context)
    valid_docs = make_documents(*open_tokens(valid_shards), settings.context)
    train_stream = PackedStream(train_docs, settings.context, settings.seed, drop_last=True)
    valid_stream = PackedStream(valid_docs, settings.context, settings.eval_seed, drop_last=False)

    model = build_model(settings.shape, settings.objective, settings.context, settings.seed).to(device)
    n_params, n_embedding = count_parameters(model)
    assert n_params == settings.n_params, (n_params, settings.n_params)
    optimizer = _optimizer(model, settings)
    total_steps = settings.num_steps
    evals = set(eval_steps(total_steps, settings.eval_points))
    fingerprint = settings_fingerprint(settings)
    log(
        f"run {settings.objective} C={settings.flops_budget:.3g} shape={settings.shape} N={n_params:,} "
        f"steps={total_steps} tokens/step={settings.tokens_per_step} "
        f"train_rows/epoch={train_stream.rows_per_epoch} processes={world} device={device}"
    )

    records: list[dict] = []
    start_step, seconds_before, resumed_from = 0, 0.0, None
    if checkpoint_dir is not None:
        if rank == 0:
            _prepare_checkpoints(checkpoint_dir, fingerprint, log)
        _barrier(world)
        found = load_checkpoint(checkpoint_dir, map_location=device, log=log)
        if found is not None:
            path, state = found
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            _set_rng_state(state["rng"])
            trainer = state["trainer"]
            start_step, records = int(trainer["step"]), list(trainer["records"])
            seconds_before, resumed_from = float(trainer["train_seconds"]), start_step
            log(f"resuming from checkpoint {path.name} (step {start_step})")
        _barrier(world)  # nobody rotates checkpoints while another rank still reads one

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    local_rows = settings.batch_rows // world
    model.train()
    attempt_started = time.perf_counter()
    longest_step, last_save = 0.0, 0.0

    def train_seconds() -> float:
        return seconds_before + time.perf_counter() - attempt_started

    def time_is_up() -> bool:
        if time_limit_s is None:
            return False
        left = time_limit_s - (time.monotonic() - started_at)
        return left < time_margin_s + 2 * longest_step + last_save

    def save(step_done: int) -> Path | None:
        """Checkpoint after ``step_done`` updates (rank 0 writes; every rank waits for the commit)."""
        nonlocal last_save
        if checkpoint_dir is None:
            return None
        t0 = time.perf_counter()
        path = None
        if rank == 0:
            path = save_checkpoint(
                checkpoint_dir,
                step_done,
                model_state=model.state_dict(),
                optimizer_state=optimizer.state_dict(),
                rng_state=_rng_state(),
                trainer_state={
                    "fingerprint": fingerprint,
                    "records": records,
                    "train_seconds": train_seconds(),
                    "world_size": world,
                },
                keep=KEEP_CHECKPOINTS,
            )
        _barrier(world)
        last_save = time.perf_counter() - t0
        return path

    for step in range(start_step, total_steps):
        t_step = time.perf_counter()
        lr = learning_rate(step, total_steps, settings.peak_lr, settings.warmup_steps, settings.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows = train_stream.rows(step * settings.batch_rows, settings.batch_rows)
        rng = np.random.default_rng([settings.seed, TRAIN_STREAM, step])
        batch = _to_device(
            local_batch(rows, settings.objective, rng, settings.mask_ratio, rank, world), device
        )
        assert batch.input_ids.shape[0] == local_rows
        out = net(
            input_ids=batch.input_ids, attention_mask=attention_mask(batch.segments, settings.objective == "clm"),
            position_ids=batch.position_ids,
        )
        loss_sum, n_scored = masked_lm_loss_sum(out.logits, batch.labels)
        if world == 1:
            loss = loss_sum / max(n_scored, 1)
        else:
            # one all-reduce: summed NLL (for the log), scored tokens (the normaliser), stop votes
            stats = torch.tensor(
                [float(loss_sum.detach()), n_scored, float(bool(stop) or time_is_up())],
                dtype=torch.float64,
                device=device,
            )
            dist.all_reduce(stats)
            global_sum, global_count, stop_votes = stats.tolist()
            # DDP averages gradients over ranks: scale by W so the update is the global-batch gradient
            loss = loss_sum * world / max(global_count, 1.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_loss = float(loss.detach()) if world == 1 else global_sum / max(global_count, 1.0)
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss became {train_loss} at step {step}; lower train.lr (now {settings.peak_lr})"
            )
        num_tokens = (step + 1) * settings.tokens_per_step
        val_loss = None
        if step in evals and rank == 0:
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
        longest_step = max(longest_step, time.perf_counter() - t_step)
        if on_step is not None:
            on_step(step + 1)
        # one process decides now; several ranks decided together in this step's all-reduce
        stop_now = (bool(stop) or time_is_up()) if world == 1 else stop_votes > 0
        if step + 1 == total_steps:
            break  # the final outputs follow
        periodic = checkpoint_every > 0 and (step + 1) % checkpoint_every == 0
        if periodic or stop_now:
            path = save(step + 1)
        if stop_now:
            reason = stop.reason or "time limit"
            log(f"stopping at step {step + 1}/{total_steps} ({reason}); rerun to resume")
            raise TrainingStopped(reason, step + 1, path)

    seconds = train_seconds()
    num_tokens = total_steps * settings.tokens_per_step
    tokens_per_second = num_tokens / seconds
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
        "processes": world,
        "resumed_from_step": resumed_from,
    }
    if rank == 0:
        save_model(model, model_dir)
        metrics = pl.DataFrame(records, schema_overrides={"val_loss": pl.Float64})
        tmp_metrics = metrics_path.with_name(f".{metrics_path.name}.tmp")
        metrics.write_parquet(tmp_metrics)
        tmp_metrics.replace(metrics_path)
        write_json_atomic(done_path, done)
        if checkpoint_dir is not None and not keep_checkpoints:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        keys = ("num_steps", "num_tokens", "final_val_loss", "tokens_per_second")
        log(json.dumps({k: done[k] for k in keys}))
    _barrier(world)
    return done
