"""The fit stage: tables across runs (polars) -> Approaches 1, 2, 3 (plmscale.fits) -> JSON.

A method that the data cannot support (e.g. Approach 2 with fewer than three sizes per budget) is
recorded in the JSON with the reason, next to the methods that could be fitted; nothing is dropped
silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from plmscale import fits
from plmscale.atomic import write_json_atomic
from plmscale.collect import curve_table, run_table


def _attempt(method: str, fn, *args, **kwargs) -> dict[str, Any]:
    try:
        return fn(*args, **kwargs).to_dict()
    except ValueError as err:  # the data cannot support this method: say so in the result
        return {"method": method, "skipped_reason": str(err)}


def fit_tables(
    runs: pl.DataFrame,
    curves: pl.DataFrame,
    *,
    approach1_bins: int,
    approach2_exclude_edge: bool,
    approach3_grid: str,
    huber_delta: float,
) -> dict[str, Any]:
    """All three approaches on one objective's final runs (2, 3) and learning curves (1)."""
    grid = fits.Approach3Grid.small() if approach3_grid == "small" else fits.Approach3Grid()
    curve_points = curves.select(
        run_id=pl.col("run"), flops=pl.col("flops"), n_params=pl.col("n_params").cast(pl.Float64),
        num_tokens=pl.col("num_tokens").cast(pl.Float64), loss=pl.col("val_loss"),
    )  # fmt: skip
    return {
        "approach1": _attempt("approach1", fits.approach1, curve_points, n_bins=approach1_bins),
        "approach2": _attempt(
            "approach2",
            fits.approach2,
            runs["flops_budget"].to_numpy(),
            runs["n_params"].to_numpy(),
            runs["val_loss"].to_numpy(),
            exclude_edge=approach2_exclude_edge,
        ),
        "approach3": _attempt(
            "approach3",
            fits.approach3,
            runs["n_params"].to_numpy(),
            runs["num_tokens"].to_numpy(),
            runs["val_loss"].to_numpy(),
            huber_delta=huber_delta,
            init_grid=grid,
        ),
    }


def _write_parquet(frame: pl.DataFrame, path: str | Path) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)


def fit_objective(
    eval_jsons: list[str],
    done_jsons: list[str],
    metrics: list[str],
    *,
    runs_out: str,
    curves_out: str,
    fits_out: str,
    objective: str,
    approach1_bins: int,
    approach2_exclude_edge: bool,
    approach3_grid: str,
    huber_delta: float,
) -> dict[str, Any]:
    runs = run_table(eval_jsons, done_jsons)
    curves = curve_table(metrics, done_jsons)
    result = {
        "objective": objective,
        "n_runs": runs.height,
        "budgets": sorted(set(runs["flops_budget"].to_list())),
        **fit_tables(
            runs,
            curves,
            approach1_bins=approach1_bins,
            approach2_exclude_edge=approach2_exclude_edge,
            approach3_grid=approach3_grid,
            huber_delta=huber_delta,
        ),
    }
    _write_parquet(runs, runs_out)
    _write_parquet(curves, curves_out)
    write_json_atomic(fits_out, result)
    print(json.dumps(exponents(result), indent=2))
    return result


def exponents(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a fit result: N_opt ~ C^a and D_opt ~ C^b by each approach."""
    out: dict[str, Any] = {}
    for method in ("approach1", "approach2", "approach3"):
        fit = result.get(method, {})
        if fit.get("n_opt") and fit.get("d_opt"):
            out[method] = {
                "n_opt_exponent": fit["n_opt"]["exponent"],
                "d_opt_exponent": fit["d_opt"]["exponent"],
            }
        else:
            out[method] = {"skipped": fit.get("skipped_reason") or fit.get("law_reason")}
        if method == "approach2" and "budgets" in fit:
            out[method]["budgets_at_edge"] = sum(1 for b in fit["budgets"] if b.get("at_edge"))
            out[method]["budgets"] = len(fit["budgets"])
        if method == "approach3" and "alpha" in fit:
            out[method].update({k: fit[k] for k in ("E", "A", "B", "alpha", "beta")})
    return out


def write_summary(fit_jsons: list[str], run_tables: list[str], output: str) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for fit_path, runs_path in zip(fit_jsons, run_tables, strict=True):
        result = json.loads(Path(fit_path).read_text())
        runs = pl.read_parquet(runs_path)
        best = runs.sort("val_loss").row(0, named=True)
        summary[result["objective"]] = {
            "n_runs": runs.height,
            "training_seconds": round(float(runs["wall_seconds"].sum()), 1),
            "best_run": {k: best[k] for k in ("run", "n_params", "num_tokens", "flops", "val_loss")},
            "exponents": exponents(result),
            "throughput": [
                {k: row[k] for k in ("run", "n_params", "tokens_per_second", "mfu", "wall_seconds")}
                for row in runs.iter_rows(named=True)
            ],
        }
    write_json_atomic(output, summary)
    print(json.dumps(summary, indent=2))
    return summary
