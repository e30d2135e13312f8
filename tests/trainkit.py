"""Shared pieces of the training tests: small real token shards, run and execution settings (execution
defaults read from config/schema.yaml, the one place defaults live), and one call that trains a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from plmscale.config import read_yaml
from plmscale.fasta_index import index_fasta
from plmscale.flops import ModelShape
from plmscale.settings import EXECUTION_KEYS, ExecutionSettings, TrainJob, TrainSettings
from plmscale.tokenize import tokenize_shard
from plmscale.train import train_run
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
MOTIF = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
DETERMINISTIC_COLUMNS = ("step", "num_tokens", "flops", "lr", "train_loss", "val_loss", "grad_norm")


def make_shards(base: Path, n_train: int = 400, n_valid: int = 40, seed: int = 1) -> tuple[Path, Path]:
    """Train and valid token shards of prefixes of one motif (learnable in a few hundred steps)."""
    rng = np.random.default_rng(seed)
    for name, n in (("train", n_train), ("valid", n_valid)):
        fasta = base / f"{name}.fasta"
        fasta.write_text("".join(f">{name}{i}\n{MOTIF[: rng.integers(10, 33)]}\n" for i in range(n)))
        index_fasta(fasta)
        tokenize_shard(fasta, base / name, shard_index=0, num_shards=1)
    return base / "train", base / "valid"


def settings(objective: str = "mlm", **overrides) -> TrainSettings:
    values = dict(
        objective=objective, shape=ModelShape(1, 32, 2), flops_budget=5e8, context=32, batch_rows=8,
        peak_lr=5e-3, warmup_fraction=0.1, min_lr_ratio=0.1, weight_decay=0.1, beta1=0.9, beta2=0.95,
        grad_clip=1.0, mask_ratio=0.15 if objective == "mlm" else 0.0, seed=0, eval_points=4,
        eval_max_tokens=512, eval_seed=3, precision="fp32",
    )  # fmt: skip
    values.update(overrides)
    return TrainSettings(**values)


def schema_train_defaults() -> dict:
    schema = read_yaml(REPO / "config" / "schema.yaml")
    props = schema["properties"]["train"]["properties"]
    return {key: props[key]["default"] for key in EXECUTION_KEYS}


def execution(**overrides) -> ExecutionSettings:
    """The schema's default execution settings on the CPU, with ``overrides``."""
    values = {**schema_train_defaults(), "device": "cpu", **overrides}
    return ExecutionSettings(**values)


def job(shards, out: Path, s: TrainSettings | None = None, checkpoint_dir: Path | None = None) -> TrainJob:
    return TrainJob(
        run_id="test/run", run=s or settings(), train_dirs=(str(shards[0]),), valid_dirs=(str(shards[1]),),
        out_dir=str(out), checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
    )  # fmt: skip


def run(shards, out: Path, s=None, logs=None, checkpoint_dir=None, ex=None, **kw) -> dict:
    """Train ``s`` (default :func:`settings`) into ``out``; ``kw`` goes to train_run, ``ex`` are execution
    settings (default :func:`execution`)."""
    out.mkdir(parents=True, exist_ok=True)
    log = logs.append if logs is not None else (lambda *a: None)
    return train_run(job(shards, out, s, checkpoint_dir), ex or execution(), log=log, **kw)


def cli_args(shards, out: Path, s: TrainSettings | None = None, checkpoint_dir: Path | None = None,
             **execution_overrides) -> list[str]:  # fmt: skip
    """Arguments of ``python -m plmscale.train_cli`` for the same run."""
    ex = execution(**execution_overrides)
    return [
        "--job", json.dumps(job(shards, out, s, checkpoint_dir).to_dict()),
        "--execution", json.dumps({"train": ex.to_dict()}),
    ]  # fmt: skip


def metrics(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "metrics.parquet")


def weights(out: Path) -> dict:
    return load_file(out / "model" / "model.safetensors")


def assert_same_run(a: Path, b: Path, steps: int | None = None) -> None:
    """Bit-identical runs: every step's losses, lr, tokens, and every weight (timings may differ)."""
    ma, mb = metrics(a).select(DETERMINISTIC_COLUMNS), metrics(b).select(DETERMINISTIC_COLUMNS)
    assert ma.height == mb.height == (steps or settings().num_steps)
    assert ma.equals(mb)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert (wa[name] == wb[name]).all(), name
