"""One training run of a scaling point: a fresh model trained on ``D = C / (6 N)`` tokens.

Recipe (the paper's, scaled down): AdamW (beta2 0.95, weight decay 0.1 on matrices, gradient clipping
1.0), linear warm-up then cosine decay to 10% of the peak learning rate over the run's own budget,
packed rows with attention kept inside each protein, fixed seeds.  Outputs: a Hugging Face model
directory, per-step metrics (Parquet) and ``done.json``, written last.

Using the hardware (``plmscale.settings.ExecutionSettings``):

* the device the job asked for (``cpu``, ``cuda``, ``hpu``; :mod:`plmscale.devices`), never a silent CPU
  run; bf16 autocast with fp32 master weights and optimizer state (``train.precision``);
* the global batch of ``batch_rows`` rows per optimizer step is split over ``W`` processes (rows ``rank,
  rank + W, ...``) and, on each, into micro-batches of ``micro_batch_rows`` (gradient accumulation).  Each
  micro-batch's summed loss is divided by the global count of scored tokens (known before the forward:
  the targets of the whole step are built on the host), so the update equals the one-batch update; DDP
  all-reduces only after the last micro-batch;
* attention that stays inside each packed protein without a dense mask (:mod:`plmscale.attention`);
* DDP or FSDP2 sharding, activation checkpointing, ``torch.compile``, fused AdamW
  (:mod:`plmscale.distributed`);
* batches built ahead in a background thread from the memory-mapped token stores.

Surviving the cluster: the run checkpoints (``plmscale.checkpoint``) into a directory outside the declared
outputs every ``checkpoint_every`` steps, when its time limit comes close, and when SIGTERM or SIGUSR1
asks it to stop; it then raises ``TrainingStopped`` (exit code 75).  The next attempt resumes from the
newest committed checkpoint and reproduces the uninterrupted run exactly (the batch of a step is a
function of ``(seed, step)``), unless the run's inputs changed: a checkpoint records the run settings, the
token manifests' checksums and the training code digest, and a resume with any of them changed is refused
(``train.on_input_change: refuse``) or starts fresh and says so (``restart``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from plmscale import attention, devices, memory, peaks
from plmscale.atomic import write_json_atomic
from plmscale.distributed import (
    DistInfo,
    barrier,
    dist_info_from_env,
    distributed,
    full_model_state,
    wrap_model,
)
from plmscale.flops import training_flops
from plmscale.mixing import check_repetition
from plmscale.model import build_model, count_parameters
from plmscale.resume import InputsChanged, resume_state, run_identity, save_state
from plmscale.settings import ExecutionSettings, TrainJob, TrainSettings
from plmscale.steps import (
    StepBatches,
    check_batch_split,
    fit_micro_batch,
    has_fused_adamw,
    make_optimizer,
    train_step,
)
from plmscale.stopping import EX_TEMPFAIL, StopRequest, TrainingStopped, stop_on_signals
from plmscale.throughput import Throughput, format_line
from plmscale.tokens import esm_tokenizer, write_vocab
from plmscale.train_data import open_streams
from plmscale.validation import eval_steps, validation_loss

__all__ = [
    "EX_TEMPFAIL",
    "InputsChanged",
    "StopRequest",
    "TrainSettings",
    "TrainingStopped",
    "learning_rate",
    "train_run",
]


def learning_rate(step: int, total_steps: int, peak: float, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to ``min_ratio * peak`` at the
    last step (Hoffmann et al. 2022 §3: the cosine cycle matches the run's own length)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def save_model(model: torch.nn.Module, model_dir: Path) -> None:
    """Save in Hugging Face format (config.json, model.safetensors, ESM-2 vocabulary) atomically.  The
    attention backend is not part of config.json: the directory loads anywhere with the Auto classes."""
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


TIED_KEYS = frozenset({"lm_head.decoder.weight", "lm_head.decoder.bias"})  # aliases of saved tensors


def load_init_weights(model: torch.nn.Module, model_dir: str | Path) -> str:
    """Load another run's final weights into ``model`` (a transfer run; Cheng et al. 2024, Sec. 4).

    Both objectives share every parameter name (:mod:`plmscale.model`), so a CLM run's weights start an MLM
    run of the same shape and vice versa; only the attention mask and the loss change. The optimizer and the
    schedule are the new run's own. Returns the sha256 of the weights file (recorded in ``done.json`` and in
    checkpoints, so a resume after the source changed is refused).
    """
    import hashlib

    from safetensors.torch import load_file

    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the source run of this transfer run has no final weights; train it first "
            "(the workflow does so before the transfer run)"
        )
    state = load_file(path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensor shapes differ
        raise ValueError(
            f"{path}: weights do not fit this run's shape ({err}); transfer needs the same shape"
        ) from err
    unexpected, missing = list(result.unexpected_keys), sorted(set(result.missing_keys) - TIED_KEYS)
    if unexpected or missing:
        raise ValueError(
            f"{path}: not a plmscale run of this family (unexpected keys {unexpected[:5]}, "
            f"missing {missing[:5]}); start transfer runs from a run of the other objective, same shape"
        )
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_run(
    job: TrainJob,
    execution: ExecutionSettings,
    *,
    threads: int = 1,
    log: Callable[[str], object] = print,
    time_limit_s: float | None = None,
    time_margin_s: float = 0.0,
    started_at: float | None = None,
    stop: StopRequest | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train one scaling point and write its outputs; returns the content of ``done.json``.

    ``time_limit_s``: seconds since ``started_at`` (``time.monotonic()``, default: now) the run may use; it
    checkpoints and raises ``TrainingStopped`` once the time left is below ``time_margin_s`` plus twice the
    longest step plus the last checkpoint's write time.  SIGTERM and SIGUSR1 stop it the same way at the
    end of the current step.  ``on_step(step)`` is called after each completed step (tests).
    """
    started_at = time.monotonic() if started_at is None else started_at
    stop = StopRequest() if stop is None else stop
    info = dist_info_from_env()
    check_batch_split(job.run, execution, info.world_size)
    device = devices.resolve_device(execution.device, info.local_rank, log=log if info.rank == 0 else None)
    torch.set_num_threads(threads)
    backend = devices.distributed_backend(
        device, world_size=info.world_size, rank=info.rank, local_rank=info.local_rank
    )
    with stop_on_signals(stop), distributed(info, backend, always=execution.parallel == "fsdp"):
        trainer = _Trainer(job, execution, info, device, log if info.rank == 0 else _quiet)
        return trainer.run(
            stop=stop, started_at=started_at, time_limit_s=time_limit_s, time_margin_s=time_margin_s,
            on_step=on_step, threads=threads,
        )  # fmt: skip


def _quiet(*_args: object, **_kwargs: object) -> None:
    return None


class _Trainer:
    """The state of one attempt of one run (see :func:`train_run`)."""

    def __init__(
        self, job: TrainJob, execution: ExecutionSettings, info: DistInfo, device: torch.device,
        log: Callable,
    ) -> None:  # fmt: skip
        self.job, self.run_settings, self.execution = job, job.run, execution
        self.info, self.device, self.log = info, device, log
        run = job.run
        devices.check_precision(device, run.precision)
        log(devices.configure_backends(device, run.precision))
        attention.check_backend(execution.attention, device, training=True)
        self.streams = open_streams(job, info, log)
        self.source_use = self.streams.usage(run.num_steps * run.batch_rows, dict(execution.max_epochs))
        check_repetition(self.source_use, execution.on_over_repeat, log)  # before anything is built
        self.micro_rows, self.memory_estimate = fit_micro_batch(run, execution, info.world_size, device)
        torch.manual_seed(run.seed)
        model = build_model(run.shape, run.objective, run.context, run.seed)
        self.n_params, self.n_embedding = count_parameters(model)
        assert self.n_params == run.n_params, (self.n_params, run.n_params)
        self.init_sha256 = None if run.init_from is None else load_init_weights(model, run.init_from)
        if self.init_sha256 is not None:
            log(
                f"initialised from {run.init_from} (sha256 {self.init_sha256[:16]}); "
                "optimizer and schedule fresh"
            )
        attention.set_backend(model, execution.attention)
        if execution.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = model.to(device)
        self.net, self.is_ddp = wrap_model(self.model, execution.parallel, device, info.world_size)
        self.fused = execution.fused_adamw and has_fused_adamw(device, execution.parallel)
        self.optimizer = make_optimizer(self.model, run, self.fused)
        self.identity = run_identity(run, self.streams)
        if self.init_sha256 is not None:  # a resume after the source run's weights changed is refused
            self.identity["init_sha256"] = self.init_sha256
        self.records: list[dict] = []
        self.start_step, self.seconds_before, self.resumed_from = 0, 0.0, None
        if job.checkpoint_dir is not None:
            self._resume(Path(job.checkpoint_dir))
        if execution.compile:
            # Intel Gaudi compiles with its own backend (docs.habana.ai, "PyTorch Gaudi Theory of Operations")
            backend = "hpu_backend" if device.type == "hpu" else "inductor"
            self.net = torch.compile(self.net, backend=backend)
        peak, self.peak_source = peaks.peak_flops(
            device, run.precision, execution.peak_flops, measure_cpu=True
        )
        self.meter = Throughput(
            n_params=self.n_params, shape=run.shape, context=run.context, tokens_per_step=run.tokens_per_step,
            total_steps=run.num_steps, peak_flops_per_device=peak, devices=info.world_size,
        )  # fmt: skip

    def _resume(self, root: Path) -> None:
        found = resume_state(
            root, self.identity, self.model, self.optimizer, self.info, self.execution, self.device, self.log
        )
        if found is not None:
            self.start_step, self.records = int(found["step"]), list(found["records"])
            self.seconds_before, self.resumed_from = float(found["train_seconds"]), self.start_step
            self.log(f"resuming from checkpoint {found['name']} (step {self.start_step})")

    def banner(self, threads: int) -> str:
        run, ex = self.run_settings, self.execution
        dtype = torch.bfloat16 if run.precision == "bf16" else torch.float32
        return (
            f"run {self.job.run_id} {run.objective} C={run.flops_budget:.3g} N={self.n_params:,} "
            f"shape=L{run.shape.layers}/d{run.shape.width}/h{run.shape.heads} steps={run.num_steps} "
            f"tokens/step={run.tokens_per_step} train_rows/epoch={self.streams.train.rows_per_epoch} | "
            f"device={devices.describe_device(self.device)} processes={self.info.world_size} "
            f"parallel={ex.parallel} precision={run.precision} "
            f"attention={ex.attention} ({attention.kernel_name(ex.attention, self.device, dtype=dtype)}) "
            f"micro_batch_rows={self.micro_rows} accumulation={self.accumulation} compile={ex.compile} "
            f"activation_checkpointing={ex.activation_checkpointing} fused_adamw={self.fused} "
            f"threads={threads} "
            f"peak={self.meter.peak_flops_per_device or 0:.3g} FLOP/s ({self.peak_source})"
        )

    @property
    def accumulation(self) -> int:
        return self.run_settings.batch_rows // self.info.world_size // self.micro_rows

    def evaluate(self) -> float:
        """Validation loss: rank 0 alone under DDP; every rank under FSDP (its forward is a collective)."""
        run, ex = self.run_settings, self.execution
        loss, _ = validation_loss(
            self.model, run.objective, self.streams.valid, max_tokens=run.eval_max_tokens,
            batch_rows=self.micro_rows, mask_ratio=run.mask_ratio, eval_seed=run.eval_seed,
            attention_backend=ex.attention, precision=run.precision,
        )  # fmt: skip
        return loss

    def run(self, *, stop, started_at, time_limit_s, time_margin_s, on_step, threads) -> dict:
        run, info = self.run_settings, self.info
        self.log(self.banner(threads))
        total_steps = run.num_steps
        evals = set(eval_steps(total_steps, run.eval_points))
        evaluating_ranks = info.world_size if self.execution.parallel == "fsdp" else 1
        attempt_started = time.perf_counter()
        longest_step, last_save, first = 0.0, 0.0, True
        memory.reset_peak_memory(self.device)

        def time_is_up() -> bool:
            if time_limit_s is None:
                return False
            left = time_limit_s - (time.monotonic() - started_at)
            return left < time_margin_s + 2 * longest_step + last_save

        self.model.train()
        with StepBatches(self.streams.train, run, info, self.micro_rows, self.device,
                         self.execution.prefetch_steps, self.start_step, self.execution.attention,
                         ) as batches:  # fmt: skip
            for step in range(self.start_step, total_steps):
                t_step = time.perf_counter()
                lr = learning_rate(step, total_steps, run.peak_lr, run.warmup_steps, run.min_lr_ratio)
                result = train_step(self, batches.get(step), lr, stop_vote=bool(stop) or time_is_up())
                seconds = time.perf_counter() - t_step
                self.meter.add_step(seconds, first_of_attempt=first)
                first = False
                longest_step = max(longest_step, seconds)
                val_loss = None
                if step in evals and info.rank < evaluating_ranks:
                    val_loss = self.evaluate()
                self._record(step, lr, result, val_loss)
                if on_step is not None:
                    on_step(step + 1)
                # one process decides now; several ranks decided together in the step's all-reduce
                stop_now = result.stop or (info.world_size == 1 and (bool(stop) or time_is_up()))
                if step + 1 == total_steps:
                    break  # the final outputs follow
                every = self.execution.checkpoint_every
                periodic = every > 0 and (step + 1) % every == 0
                path = None
                if periodic or stop_now:
                    t0 = time.perf_counter()
                    path = self._save(step + 1, attempt_started)
                    last_save = time.perf_counter() - t0
                if stop_now:
                    reason = stop.reason or "time limit"
                    self.log(f"stopping at step {step + 1}/{total_steps} ({reason}); rerun to resume")
                    raise TrainingStopped(reason, step + 1, path)
        return self._finish(attempt_started, threads)

    def _record(self, step: int, lr: float, result, val_loss: float | None) -> None:
        run = self.run_settings
        num_tokens = (step + 1) * run.tokens_per_step
        record = {
            "step": step + 1,
            "num_tokens": num_tokens,
            "flops": training_flops(self.n_params, num_tokens),
            "lr": lr,
            "train_loss": result.loss,
            "val_loss": val_loss,
            "grad_norm": result.grad_norm,
            "tokens_per_second": None,
            "flops_per_second": None,
            "mfu": None,
            "mfu_6n": None,
            "peak_memory_bytes": None,
        }
        log_now = (step + 1) % self.execution.log_every == 0 or step + 1 == run.num_steps
        if log_now:
            record.update(self.meter.window(), peak_memory_bytes=memory.peak_memory_bytes(self.device))
            self.log(format_line(record, run.num_steps, self.meter.eta_seconds(step + 1)))
        if val_loss is not None:
            self.log(f"step {step + 1}/{run.num_steps} tokens={num_tokens} val_loss={val_loss:.4f}")
        self.records.append(record)

    def _train_seconds(self, attempt_started: float) -> float:
        return self.seconds_before + time.perf_counter() - attempt_started

    def _save(self, step_done: int, attempt_started: float) -> Path | None:
        """Checkpoint after ``step_done`` updates (a collective under FSDP; rank 0 writes)."""
        if self.job.checkpoint_dir is None:
            return None
        self.streams.check_verified()
        trainer_state = {
            "identity": self.identity,
            "records": self.records,
            "train_seconds": self._train_seconds(attempt_started),
            "world_size": self.info.world_size,
        }
        return save_state(Path(self.job.checkpoint_dir), step_done, self.model, self.optimizer, trainer_state,
                          self.info)  # fmt: skip

    def _finish(self, attempt_started: float, threads: int) -> dict:
        run, info = self.run_settings, self.info
        self.streams.check_verified()
        seconds = self._train_seconds(attempt_started)
        overall = self.meter.overall()
        num_tokens = run.num_steps * run.tokens_per_step
        done = {
            "run_id": self.job.run_id,
            "objective": run.objective,
            "settings": run.to_dict(),
            "execution": self.execution.to_dict(),
            "n_params_non_embedding": self.n_params,
            "n_params_embedding": self.n_embedding,
            "flops_budget": run.flops_budget,
            "num_steps": run.num_steps,
            "num_tokens": num_tokens,
            "flops": training_flops(self.n_params, num_tokens),
            "epochs": num_tokens / self.streams.train_tokens,
            "sources": [use.to_dict() for use in self.source_use],
            "final_train_loss": self.records[-1]["train_loss"],
            "final_val_loss": self.records[-1]["val_loss"],
            "wall_seconds": seconds,
            **overall,
            "warmup_seconds": self.meter.warmup_seconds,
            "peak_flops_per_device": self.meter.peak_flops_per_device,
            "peak_flops_source": self.peak_source,
            "peak_memory_bytes": memory.peak_memory_bytes(self.device),
            "device": devices.describe_device(self.device),
            "threads": threads,
            "processes": info.world_size,
            "resumed_from_step": self.resumed_from,
            "init_from": run.init_from,
            "init_sha256": self.init_sha256,
            "unique_tokens": getattr(self.streams, "unique_tokens", None),
        }
        model_state = full_model_state(self.model)  # a collective under FSDP
        if info.rank == 0:
            self._write_outputs(model_state, done)
        barrier(info.world_size)
        return done

    def _write_outputs(self, model_state: dict, done: dict) -> None:
        run, job = self.run_settings, self.job
        cpu_model = build_model(run.shape, run.objective, run.context, run.seed)
        cpu_model.load_state_dict(model_state)
        save_model(cpu_model, job.model_dir)
        metrics = pl.DataFrame(self.records, schema=METRICS_SCHEMA)
        tmp_metrics = job.metrics_path.with_name(f".{job.metrics_path.name}.tmp")
        metrics.write_parquet(tmp_metrics)
        tmp_metrics.replace(job.metrics_path)
        write_json_atomic(job.done_path, done)
        if job.checkpoint_dir is not None and not self.execution.keep_checkpoints:
            shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
        keys = ("num_steps", "num_tokens", "final_val_loss", "tokens_per_second", "mfu", "warmup_seconds")
        self.log("done " + json.dumps({k: done[k] for k in keys}))


METRICS_SCHEMA = {
    "step": pl.Int64,
    "num_tokens": pl.Int64,
    "flops": pl.Float64,
    "lr": pl.Float64,
    "train_loss": pl.Float64,
    "val_loss": pl.Float64,
    "grad_norm": pl.Float64,
    "tokens_per_second": pl.Float64,
    "flops_per_second": pl.Float64,
    "mfu": pl.Float64,
    "mfu_6n": pl.Float64,
    "peak_memory_bytes": pl.Int64,
}
