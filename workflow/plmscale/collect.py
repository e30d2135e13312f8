"""Tables across many runs (polars): the final-run table and the learning curves of an objective."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl


def run_table(eval_jsons: list[str | Path], done_jsons: list[str | Path]) -> pl.DataFrame:
    """One row per run: budget, shape, N, D, C and the final validation loss."""
    rows = []
    for eval_path, done_path in zip(eval_jsons, done_jsons, strict=True):
        ev = json.loads(Path(eval_path).read_text())
        done = json.loads(Path(done_path).read_text())
        shape = done["settings"]["shape"]
        rows.append(
            {
                "run": str(Path(done_path).parent),
                "run_id": done["run_id"],
                "seed": int(done["settings"]["seed"]),
                "objective": done["objective"],
                "flops_budget": float(done["flops_budget"]),
                "layers": shape["layers"],
                "width": shape["width"],
                "heads": shape["heads"],
                "n_params": int(done["n_params_non_embedding"]),
                "num_tokens": int(done["num_tokens"]),
                "flops": float(done["flops"]),
                "epochs": float(done["epochs"]),
                "val_loss": float(ev["val_loss"]),
                "tokens_per_second": float(done["tokens_per_second"]),
                "mfu": done.get("mfu"),  # None where the device has no known or measured peak
                "wall_seconds": float(done["wall_seconds"]),
            }
        )
    return pl.DataFrame(rows, schema_overrides={"mfu": pl.Float64}).sort(["flops_budget", "n_params"])


def curve_table(metrics_paths: list[str | Path], done_jsons: list[str | Path]) -> pl.DataFrame:
    """Validation points of every run's learning curve (step, tokens, FLOPs, loss) with N and budget."""
    frames = []
    for metrics_path, done_path in zip(metrics_paths, done_jsons, strict=True):
        done = json.loads(Path(done_path).read_text())
        frame = (
            pl.read_parquet(metrics_path)
            .filter(pl.col("val_loss").is_not_null())
            .select("step", "num_tokens", "flops", "train_loss", "val_loss")
            .with_columns(
                run=pl.lit(str(Path(done_path).parent)),
                n_params=pl.lit(int(done["n_params_non_embedding"]), dtype=pl.Int64),
                flops_budget=pl.lit(float(done["flops_budget"])),
            )
        )
        frames.append(frame)
    return pl.concat(frames).sort(["run", "step"])
