"""The fit stage: tables across runs (polars) -> Approaches 1, 2, 3 (plmscale.fits) -> JSON.

A method that the data cannot support (e.g. Approach 2 with fewer than three sizes per budget) is
recorded in the JSON with the reason, next to the methods that could be fitted; nothing is dropped
silently.

Every approach also gets a nonparametric bootstrap (``fit.n_bootstrap`` resamples, ``fit.seed``), in the
key layout of :mod:`plmscale.paper` so one reader serves both: ``"<method>_bootstrap"`` (a ``to_dict()`` of
:func:`plmscale.fits.approach1_bootstrap` -- whole learning curves resampled --,
:func:`~plmscale.fits.approach2_bootstrap` -- runs resampled within each budget -- or
:func:`~plmscale.fits.approach3_bootstrap` -- runs resampled and refitted), or
``{"method": ..., "skipped_reason": ...}`` when the data cannot support it, and ``"<method>_bands"``: the
pointwise 2.5/50/97.5 percentiles of ``N_opt(C)`` and ``D_opt(C)`` over the bootstrap draws
(:func:`plmscale.paper.law_band`). :func:`law_status` says whether a method's law may be drawn or quoted
as fitted (it exists and, for Approach 3, the optimiser converged).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from plmscale import fits
from plmscale.atomic import write_json_atomic
from plmscale.collect import curve_table, run_table
from plmscale.extrapolation import extrapolation_check
from plmscale.laws import bootstrap_of, exponent_interval, law_status
from plmscale.paper import law_band
from plmscale.powerlaw import compute_optimal_laws

METHODS: tuple[str, ...] = ("approach1", "approach2", "approach3")
#: points of the stored ``"<method>_bands"`` grid, log-spaced from half the smallest to twice the largest
#: compute of the runs (the range of the optimal-allocation figure)
BAND_POINTS = 40


def _attempt(method: str, fn, *args, **kwargs) -> dict[str, Any]:
    try:
        return fn(*args, **kwargs).to_dict()
    except ValueError as err:  # the data cannot support this method: say so in the result
        return {"method": method, "skipped_reason": str(err)}


def law_samples(boot: Mapping[str, Any], law: str) -> list[tuple[float, float]]:
    """Per-draw ``(coefficient, exponent)`` of ``law`` from a bootstrap's stored ``samples``: directly for
    Approaches 1 and 2; for Approach 3 the allocation implied by each draw's ``A, B, alpha, beta``
    (:func:`plmscale.powerlaw.compute_optimal_laws`; draws without one, alpha or beta <= 0, are left out)."""
    s = boot.get("samples") or {}
    if f"{law}_exponent" in s:
        pairs = zip(s[f"{law}_coefficient"], s[f"{law}_exponent"], strict=True)
        return [(float(k), float(a)) for k, a in pairs if k is not None and a is not None]
    out = []
    if law in ("n_opt", "d_opt") and all(k in s for k in ("A", "B", "alpha", "beta")):
        for big_a, big_b, alpha, beta in zip(s["A"], s["B"], s["alpha"], s["beta"], strict=True):
            try:
                n_law, d_law = compute_optimal_laws(big_a, big_b, alpha, beta)
            except (TypeError, ValueError):  # None (non-finite) or no allocation in this draw
                continue
            chosen = n_law if law == "n_opt" else d_law
            if math.isfinite(chosen.coefficient):
                out.append((chosen.coefficient, chosen.exponent))
    return out


def law_bands(boot: Mapping[str, Any] | None, c_grid: np.ndarray, laws=("n_opt", "d_opt")) -> dict[str, Any]:
    """Pointwise 95% bands (:func:`plmscale.paper.law_band`) of each of ``laws`` on ``c_grid`` from the
    bootstrap's per-draw laws (a draw whose law is not finite on the grid is left out); a law with fewer
    than two such draws gets no band."""
    if not boot:
        return {}
    c = np.asarray(c_grid, dtype=np.float64)
    bands = {}
    for law in laws:
        with np.errstate(over="ignore", invalid="ignore"):  # a wild draw may overflow: left out below
            samples = [(k, a) for k, a in law_samples(boot, law) if np.all(np.isfinite(k * c**a))]
        if len(samples) >= 2:
            bands[law] = law_band(samples, c)
    return bands


def _approach2_bootstrap(
    runs: pl.DataFrame, a2: dict[str, Any], *, exclude_edge: bool, **kw
) -> dict[str, Any]:
    if not (a2.get("n_opt") and a2.get("d_opt")):  # no law to put an interval on
        reason = a2.get("skipped_reason") or a2.get("law_reason")
        return {"method": "approach2_bootstrap", "skipped_reason": f"approach2 has no N_opt(C) law: {reason}"}
    return _attempt(
        "approach2_bootstrap", fits.approach2_bootstrap, runs["flops_budget"].to_numpy(),
        runs["n_params"].to_numpy(), runs["val_loss"].to_numpy(), exclude_edge=exclude_edge, **kw,
    )  # fmt: skip


def _approach3(runs: pl.DataFrame, *, n_bootstrap: int, seed: int, **kw) -> tuple[dict, dict]:
    n, d, y = (runs[c].to_numpy().astype(float) for c in ("n_params", "num_tokens", "val_loss"))
    try:
        a3 = fits.approach3(n, d, y, **kw)
    except ValueError as err:
        reason = str(err)
        return {"method": "approach3", "skipped_reason": reason}, {
            "method": "approach3_bootstrap", "skipped_reason": f"approach3 not fitted: {reason}"
        }  # fmt: skip
    boot = _attempt(
        "approach3_bootstrap", fits.approach3_bootstrap, n, d, y, n_resamples=n_bootstrap, seed=seed,
        grid=kw["init_grid"], huber_delta=kw["huber_delta"], full_fit=a3,
    )  # fmt: skip
    return a3.to_dict(), boot


def fit_tables(
    runs: pl.DataFrame,
    curves: pl.DataFrame,
    *,
    approach1_bins: int,
    approach2_exclude_edge: bool,
    approach3_grid: str,
    huber_delta: float,
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """All three approaches on one objective's final runs (2, 3) and learning curves (1), each with its
    bootstrap (``n_bootstrap`` resamples from ``seed``) and the 95% bands of its laws."""
    grid = fits.Approach3Grid.small() if approach3_grid == "small" else fits.Approach3Grid()
    curve_points = curves.select(
        run_id=pl.col("run"), flops=pl.col("flops"), n_params=pl.col("n_params").cast(pl.Float64),
        num_tokens=pl.col("num_tokens").cast(pl.Float64), loss=pl.col("val_loss"),
    )  # fmt: skip
    a2 = _attempt(
        "approach2",
        fits.approach2,
        runs["flops_budget"].to_numpy(),
        runs["n_params"].to_numpy(),
        runs["val_loss"].to_numpy(),
        exclude_edge=approach2_exclude_edge,
    )
    a3, a3_boot = _approach3(
        runs, n_bootstrap=n_bootstrap, seed=seed, huber_delta=huber_delta, init_grid=grid
    )
    result: dict[str, Any] = {
        "approach1": _attempt("approach1", fits.approach1, curve_points, n_bins=approach1_bins),
        "approach1_bootstrap": _attempt(
            "approach1_bootstrap",
            fits.approach1_bootstrap,
            curve_points,
            n_bins=approach1_bins,
            n_resamples=n_bootstrap,
            seed=seed,
        ),
        "approach2": a2,
        "approach2_bootstrap": _approach2_bootstrap(
            runs, a2, exclude_edge=approach2_exclude_edge, n_resamples=n_bootstrap, seed=seed
        ),
        "approach3": a3,
        "approach3_bootstrap": a3_boot,
    }
    compute = [c for c in (*curves["flops"].to_list(), *runs["flops_budget"].to_list()) if c and c > 0]
    c_grid = np.geomspace(min(compute) / 2, max(compute) * 2, BAND_POINTS) if compute else np.array([])
    for method in METHODS:
        result[f"{method}_bands"] = law_bands(bootstrap_of(result, method), c_grid) if len(c_grid) else {}
    result["extrapolation"] = own_extrapolation(
        runs, exclude_edge=approach2_exclude_edge, init_grid=grid, huber_delta=huber_delta
    )
    return result


def extrapolation_summary(ext: Mapping[str, Any]) -> dict[str, Any]:
    """Per method: the held-out budget's predicted / observed N_opt and loss error, or why not checked."""
    if ext.get("skipped_reason"):
        return {"skipped": ext["skipped_reason"]}
    out: dict[str, Any] = {}
    for method, entry in ext.items():
        if entry.get("skipped_reason"):
            out[method] = {"skipped": entry["skipped_reason"]}
            continue
        out[method] = [
            {
                k: held.get(k)
                for k in ("budget", "n_opt_ratio", "loss_relative_error", "observed_skipped_reason")
            }
            for held in entry.get("held_out", [])
        ]
    return out


def own_extrapolation(
    runs: pl.DataFrame, *, exclude_edge: bool, init_grid: fits.Approach3Grid, huber_delta: float
) -> dict[str, Any]:
    """The extrapolation check on the study's own runs (:func:`plmscale.extrapolation.extrapolation_check`):
    fit on every budget but the largest, predict the largest. Needs at least 3 budgets; a method the
    fitting budgets cannot support is recorded with its reason."""
    budgets = sorted(set(runs["flops_budget"].to_list()))
    if len(budgets) < 3:
        return {"skipped_reason": f"{len(budgets)} budget(s); the extrapolation check needs at least 3"}
    args = (runs["flops_budget"].to_numpy(), runs["n_params"].to_numpy(), runs["val_loss"].to_numpy())
    return {
        method: _attempt(
            f"extrapolation_{method}",
            functools.partial(extrapolation_check, method=method),
            *args,
            cutoff_flops=budgets[-2],
            num_tokens=runs["num_tokens"].to_numpy().astype(float),
            exclude_edge=exclude_edge,
            init_grid=init_grid,
            huber_delta=huber_delta,
        )
        for method in ("approach2", "approach3")
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
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    runs = run_table(eval_jsons, done_jsons)
    curves = curve_table(metrics, done_jsons)
    result = {
        "objective": objective,
        "n_runs": runs.height,
        "budgets": sorted(set(runs["flops_budget"].to_list())),
        "seed_spread": seed_spread(runs),
        **fit_tables(
            runs,
            curves,
            approach1_bins=approach1_bins,
            approach2_exclude_edge=approach2_exclude_edge,
            approach3_grid=approach3_grid,
            huber_delta=huber_delta,
            n_bootstrap=n_bootstrap,
            seed=seed,
        ),
    }
    _write_parquet(runs, runs_out)
    _write_parquet(curves, curves_out)
    write_json_atomic(fits_out, result)
    print(json.dumps(exponents(result), indent=2))
    return result


def _ci(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]


def exponents(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a fit result: N_opt ~ C^a and D_opt ~ C^b by each approach, each with its
    95% bootstrap interval (``*_ci``: ``[lo, hi]``, the 2.5/97.5 percentiles; ``None`` without a
    bootstrap) and, where the law is missing, ``skipped`` (the reason); a law that exists but must not be
    trusted (Approach 3 did not converge) keeps its numbers and gets ``caveat``. A skipped bootstrap is
    named in ``bootstrap_skipped``."""
    out: dict[str, Any] = {}
    for method in METHODS:
        fit = result.get(method, {})
        boot = bootstrap_of(result, method)
        status = law_status(result, method)
        if fit.get("n_opt") and fit.get("d_opt"):
            out[method] = {}
            for law in ("n_opt", "d_opt"):
                out[method][f"{law}_exponent"] = fit[law]["exponent"]
                out[method][f"{law}_exponent_ci"] = _ci(exponent_interval(boot, law))
            if status is not None:
                out[method]["caveat"] = status
        else:
            out[method] = {"skipped": status}
        own_boot = result.get(f"{method}_bootstrap")
        if isinstance(own_boot, Mapping):
            if own_boot.get("skipped_reason"):
                out[method]["bootstrap_skipped"] = own_boot["skipped_reason"]
            else:
                out[method]["n_bootstrap"] = own_boot.get("n_resamples")
        if method == "approach3" and "best_converged" in fit:
            out[method]["converged"] = bool(fit["best_converged"])
        if method == "approach2" and "budgets" in fit:
            out[method]["budgets_at_edge"] = sum(1 for b in fit["budgets"] if b.get("at_edge"))
            out[method]["budgets"] = len(fit["budgets"])
        if method == "approach3" and "alpha" in fit:
            pct = (boot or {}).get("percentiles") or {}
            for k in ("E", "A", "B", "alpha", "beta"):
                out[method][k] = fit[k]
                entry = pct.get(k)
                out[method][f"{k}_ci"] = None if not entry else [entry.get("lo"), entry.get("hi")]
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
            "seed_spread": {k: v for k, v in (result.get("seed_spread") or {}).items() if k != "points"},
            "extrapolation": extrapolation_summary(result.get("extrapolation") or {}),
            "throughput": [
                {k: row[k] for k in ("run", "n_params", "tokens_per_second", "mfu", "wall_seconds")}
                for row in runs.iter_rows(named=True)
            ],
        }
    write_json_atomic(output, summary)
    print(json.dumps(summary, indent=2))
    return summary


def seed_spread(runs: pl.DataFrame) -> dict[str, Any]:
    """The noise floor of the study: per (budget, N) trained with several seeds (``grid.seeds``), the
    sample standard deviation and range of the final validation loss; summarised by their medians and the
    largest range. Loss differences between sizes smaller than this are not resolved by the grid."""
    groups = (
        runs.group_by("flops_budget", "n_params")
        .agg(
            n_seeds=pl.len(),
            mean=pl.col("val_loss").mean(),
            sd=pl.col("val_loss").std(ddof=1),
            lo=pl.col("val_loss").min(),
            hi=pl.col("val_loss").max(),
        )
        .filter(pl.col("n_seeds") >= 2)
        .sort("flops_budget", "n_params")
    )
    if groups.height == 0:
        return {"n_points": 0, "reason": "one seed per point (grid.seeds = 1): no noise floor measured"}
    ranges = (groups["hi"] - groups["lo"]).to_numpy()
    return {
        "n_points": groups.height,
        "seeds_per_point": int(groups["n_seeds"].min()),
        "median_sd": float(np.median(groups["sd"].to_numpy())),
        "median_range": float(np.median(ranges)),
        "max_range": float(ranges.max()),
        "points": groups.to_dicts(),
    }
