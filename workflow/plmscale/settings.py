"""The typed settings of one training job, built once from the validated config (defaults live only in
``config/schema.yaml``, which fills them in at parse time).

A job's settings come in two parts with different contracts:

* :class:`TrainSettings` (the *run*): every value that changes the numbers a run produces (objective, shape,
  budget, batch, optimizer, schedule, seeds, precision).  It is the ``train`` rule's one param, as JSON:
  changing a value reruns exactly the runs it belongs to (one shape's ``lr`` reruns that shape's runs), and
  its digest is recorded in every checkpoint so that a resume under other run settings is refused.
* :class:`ExecutionSettings`: how the run executes (device, attention kernel, micro-batching, parallelism,
  compile, logging, checkpoint cadence).  Not a param: changing one reruns nothing, and a checkpoint resumes
  under new execution settings (accumulation, sharding and kernels give the same update up to rounding).

:class:`TrainJob` bundles both with the job's inputs and outputs; ``python -m plmscale.train_cli`` reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from plmscale.flops import ModelShape, n_params_non_embedding
from plmscale.tokens import VOCAB_SIZE
from plmscale.typed import check_keys

DEVICES = ("auto", "cpu", "cuda", "hpu")
PRECISIONS = ("fp32", "bf16")
PARALLEL = ("ddp", "fsdp")
ON_INPUT_CHANGE = ("refuse", "restart")
ON_OVER_REPEAT = ("error", "warn")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a run's numbers (see the module docstring)."""

    objective: str
    shape: ModelShape
    flops_budget: float
    context: int
    batch_rows: int  # global batch: rows per optimizer step, all processes and micro-batches together
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
    precision: str
    init_from: str | None = None  # model directory whose weights start the run (transfer); optimizer fresh
    unique_tokens: int | None = None  # repetition: training data capped to this many tokens, repeated

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision={self.precision!r} must be one of {PRECISIONS}")

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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shape": asdict(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSettings:
        _check_keys(cls, data, "run settings")
        return cls(**{**data, "shape": ModelShape(**data["shape"])})

    def fingerprint(self) -> str:
        """Digest of the run settings: a checkpoint of other settings is never resumed."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ExecutionSettings:
    """How a run executes; none of these change its numbers beyond float rounding."""

    device: str  # auto | cpu | cuda | hpu
    attention: str  # sdpa | flex | varlen (plmscale.attention)
    micro_batch_rows: int  # rows per forward/backward on one process; 0 = the whole local batch
    parallel: str  # ddp | fsdp
    activation_checkpointing: bool
    compile: bool  # torch.compile the model (compile time is reported apart from tokens/s)
    fused_adamw: bool  # fused AdamW kernel where the device has one (CUDA, CPU)
    log_every: int  # steps between throughput lines and metric records
    checkpoint_every: int  # steps between committed checkpoints (0 = only when stopping)
    keep_checkpoints: bool  # keep the checkpoints after a finished run
    on_input_change: str  # refuse | restart: what a resume does when inputs, settings or code changed
    peak_flops: float | None  # override of the device's peak FLOP/s for MFU (None = the table)
    prefetch_steps: int  # steps of batches built ahead in a background thread
    on_over_repeat: str = "error"  # error | warn: a run that repeats a source beyond its max_epochs
    max_epochs: tuple[tuple[str, float | None], ...] = ()  # per source (sources.<name>.max_epochs)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("device", DEVICES),
            ("parallel", PARALLEL),
            ("on_input_change", ON_INPUT_CHANGE),
            ("on_over_repeat", ON_OVER_REPEAT),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"train.{name}={value!r} must be one of {allowed}")
        if self.micro_batch_rows < 0 or self.log_every < 1 or self.checkpoint_every < 0:
            raise ValueError(
                f"train.micro_batch_rows={self.micro_batch_rows} (>= 0), train.log_every={self.log_every} "
                f"(>= 1) and train.checkpoint_every={self.checkpoint_every} (>= 0) are out of range"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_epochs": dict(self.max_epochs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecutionSettings:
        _check_keys(cls, data, "execution settings")
        return cls(**{**data, "max_epochs": tuple(sorted(data["max_epochs"].items()))})


@dataclass(frozen=True)
class TrainSource:
    """One source of the training stream: its token shards and its share of the rows (None = the sources
    are concatenated, each taking rows in proportion to its size)."""

    name: str
    dirs: tuple[str, ...]
    proportion: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dirs": list(self.dirs), "proportion": self.proportion}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSource:
        _check_keys(cls, data, "train source")
        return cls(name=data["name"], dirs=tuple(data["dirs"]), proportion=data["proportion"])


@dataclass(frozen=True)
class TrainJob:
    """One training job: run and execution settings, token inputs and output locations.

    ``sources`` splits ``train_dirs`` by source with the configured proportions (plmscale.mixing); empty
    (tests, a single source) = ``train_dirs`` as one stream.
    """

    run_id: str
    run: TrainSettings
    train_dirs: tuple[str, ...]
    valid_dirs: tuple[str, ...]
    out_dir: str  # model/, metrics.parquet, done.json
    checkpoint_dir: str | None
    sources: tuple[TrainSource, ...] = ()

    def __post_init__(self) -> None:
        listed = [d for source in self.sources for d in source.dirs]
        if self.sources and sorted(listed) != sorted(self.train_dirs):
            raise ValueError(f"train sources list {listed}, not the job's train_dirs {list(self.train_dirs)}")
        given = [s.proportion is not None for s in self.sources]
        if any(given) and not all(given):
            missing = [s.name for s in self.sources if s.proportion is None]
            raise ValueError(
                f"sources {missing} have no proportion while others do; give every source a proportion "
                "(summing to 1) or none"
            )

    def with_shards(self) -> TrainJob:
        """This job with each tokenized source directory replaced by its shard directories, read from its
        manifest (:func:`plmscale.tokens.shard_dirs`): what the trainer opens."""
        from plmscale.tokens import shard_dirs

        return replace(
            self,
            train_dirs=shard_dirs(self.train_dirs),
            valid_dirs=shard_dirs(self.valid_dirs),
            sources=tuple(replace(s, dirs=shard_dirs(s.dirs)) for s in self.sources),
        )

    @property
    def model_dir(self) -> Path:
        return Path(self.out_dir) / "model"

    @property
    def metrics_path(self) -> Path:
        return Path(self.out_dir) / "metrics.parquet"

    @property
    def done_path(self) -> Path:
        return Path(self.out_dir) / "done.json"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run": self.run.to_dict(),
            "train_dirs": list(self.train_dirs),
            "valid_dirs": list(self.valid_dirs),
            "out_dir": self.out_dir,
            "checkpoint_dir": self.checkpoint_dir,
            "sources": [source.to_dict() for source in self.sources],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainJob:
        _check_keys(cls, data, "train job")
        return cls(
            run_id=data["run_id"],
            run=TrainSettings.from_dict(data["run"]),
            train_dirs=tuple(data["train_dirs"]),
            valid_dirs=tuple(data["valid_dirs"]),
            out_dir=data["out_dir"],
            checkpoint_dir=data["checkpoint_dir"],
            sources=tuple(TrainSource.from_dict(source) for source in data["sources"]),
        )


def _check_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    check_keys(
        cls, data, what,
        hint="the job was written by another version of plmscale: rerun the workflow so Snakemake writes "
        "the settings again",
    )  # fmt: skip


# --- built from the validated config ------------------------------------------------------------------


def shape_value(config: Mapping[str, Any], shape_name: str, key: str) -> Any:
    """A per-shape setting (``grid.shapes.<name>.<key>``), else ``train.<key>``."""
    return config["grid"]["shapes"][shape_name].get(key, config["train"][key])


def point_settings(config: Mapping[str, Any], point: Any) -> TrainSettings:
    """The run settings of a :class:`plmscale.config.ScalingPoint`, its variant (replicate, transfer,
    repetition) included: seed ``train.seed + replicate``; a transfer run starts from the source run's
    ``results/runs/<run_id>/model`` with its own warm-up; a repetition run caps its unique tokens."""
    return run_settings(
        config, point.objective, point.flops, point.shape_name,
        seed_offset=point.replicate,
        init_from=None if point.init_from is None else f"results/runs/{point.init_from}/model",
        warmup_fraction=point.warmup_fraction,
        unique_tokens=point.unique_tokens,
    )  # fmt: skip


def run_settings(
    config: Mapping[str, Any],
    objective: str,
    flops: float,
    shape_name: str,
    *,
    seed_offset: int = 0,
    init_from: str | None = None,
    warmup_fraction: float | None = None,
    unique_tokens: int | None = None,
) -> TrainSettings:
    """The run settings of one scaling point of a schema-validated config."""
    train, spec = config["train"], config["grid"]["shapes"][shape_name]
    return TrainSettings(
        objective=objective,
        shape=ModelShape(layers=spec["layers"], width=spec["width"], heads=spec["heads"]),
        flops_budget=float(flops),
        context=int(train["context"]),
        batch_rows=int(shape_value(config, shape_name, "batch_rows")),
        peak_lr=float(shape_value(config, shape_name, "lr")),
        warmup_fraction=float(train["warmup_fraction"] if warmup_fraction is None else warmup_fraction),
        min_lr_ratio=float(train["min_lr_ratio"]),
        weight_decay=float(train["weight_decay"]),
        beta1=float(train["beta1"]),
        beta2=float(train["beta2"]),
        grad_clip=float(train["grad_clip"]),
        mask_ratio=float(train["mlm"]["mask_ratio"]) if objective == "mlm" else 0.0,
        seed=int(train["seed"]) + int(seed_offset),
        eval_points=int(train["eval_points"]),
        eval_max_tokens=int(train["eval_max_tokens"]),
        eval_seed=int(config["evaluate"]["seed"]),
        precision=str(train["precision"]),
        init_from=init_from,
        unique_tokens=unique_tokens,
    )


EXECUTION_KEYS = tuple(f.name for f in fields(ExecutionSettings) if f.name != "max_epochs")  # train.<key>


def _max_epochs(config: Mapping[str, Any]) -> tuple[tuple[str, float | None], ...]:
    """Per-source ``max_epochs`` of a full config, or of an :func:`execution_config`."""
    if "max_epochs" in config:
        return tuple(sorted(config["max_epochs"].items()))
    return tuple(sorted((name, spec.get("max_epochs")) for name, spec in config.get("sources", {}).items()))


def execution_settings(config: Mapping[str, Any], n_params: int | None = None) -> ExecutionSettings:
    """The execution settings of a schema-validated config; with ``n_params``, the ``train.by_size`` entry
    with the largest ``min_params <= n_params`` overrides the global values (bigger models get more devices,
    sharding, smaller micro-batches)."""
    train = config["train"]
    values = {key: train[key] for key in EXECUTION_KEYS}
    tier = size_tier(config, n_params) if n_params is not None else {}
    values.update({k: v for k, v in tier.items() if k in EXECUTION_KEYS})
    return ExecutionSettings(**values, max_epochs=_max_epochs(config))


def execution_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a validated config that execution settings come from: the execution keys of ``train``
    and its ``by_size`` tiers (what the train rule hands every job; the job applies its own size's tier)."""
    train = config["train"]
    return {
        "train": {**{key: train[key] for key in EXECUTION_KEYS}, "by_size": list(train["by_size"])},
        "max_epochs": dict(_max_epochs(config)),
    }


def size_tier(config: Mapping[str, Any], n_params: int) -> dict[str, Any]:
    """The ``train.by_size`` entry that applies to a model of ``n_params`` non-embedding parameters ({} if
    none)."""
    best: dict[str, Any] = {}
    for entry in config["train"].get("by_size", []):
        if entry["min_params"] <= n_params and entry["min_params"] >= best.get("min_params", -1):
            best = entry
    return dict(best)


def devices_per_job(config: Mapping[str, Any], n_params: int) -> int:
    """Accelerators (processes) one training job of this size uses (``train.devices``, or its size tier)."""
    return int(size_tier(config, n_params).get("devices", config["train"]["devices"]))


@dataclass(frozen=True)
class JobResources:
    """What one training job asks the scheduler for (attempt 1; the rule scales memory and runtime with
    the attempt).  ``runtime_min`` is the estimated training time ``(6 N + 12 L d T) D / (devices x
    train.plan_peak_flops x train.expected_mfu)`` plus 25% and 10 minutes, at least ``train.runtime_min``
    and at most ``train.runtime_max`` (the partition's limit: a longer run checkpoints and resumes)."""

    devices: int  # processes (one per accelerator)
    gpu: int  # accelerators requested from SLURM (0 on the CPU)
    mem_mb: int  # host memory
    runtime_min: int
    estimated_hours: float


def job_resources(config: Mapping[str, Any], run: TrainSettings) -> JobResources:
    """The scheduler resources of one run under a schema-validated config."""
    from plmscale.flops import flops_per_token_with_attention

    train = config["train"]
    tier = size_tier(config, run.n_params)
    n_devices = devices_per_job(config, run.n_params)
    if n_devices > 1 and not str(train["launcher"]).strip():
        raise ValueError(
            f"a {run.objective} run of N={run.n_params:,} trains on {n_devices} devices (train.devices or "
            'train.by_size) but train.launcher is empty; set train.launcher: "torchrun --standalone '
            '--nproc_per_node={devices}" (or "srun" inside an allocation)'
        )
    num_tokens = run.num_steps * run.tokens_per_step
    flops = flops_per_token_with_attention(run.shape, run.n_params, run.context) * num_tokens
    seconds = flops / (n_devices * train["plan_peak_flops"] * train["expected_mfu"])
    minutes = math.ceil(1.25 * seconds / 60 + 10)
    return JobResources(
        devices=n_devices,
        gpu=0 if train["device"] == "cpu" else n_devices,
        mem_mb=int(tier.get("mem_mb", train["mem_mb"])),
        runtime_min=min(train["runtime_max"], max(train["runtime_min"], minutes)),
        estimated_hours=seconds / 3600,
    )
