"""The transfer law and the data-constrained (repetition) law on the study's own runs.

Both read finished runs (``done.json``, ``metrics.parquet``, the evaluation JSON) and write typed JSON:

* transfer: each transfer run (``grid.transfer``, :mod:`plmscale.variants`) is paired with its from-scratch
  baseline of the same objective, budget and shape; :func:`plmscale.transfer.transfer_entry` measures the
  effectively transferred tokens and fits ``D_t = k (1/D_F)^alpha N^beta`` exactly as on the published logs.
  The source run's compute is accounted in ``total_flops``.
* repetition: the runs of one ``grid.repetition`` entry (data capped to ``U = D / epochs`` unique tokens)
  and their uncapped reference give ``R_D*`` of Muennighoff et al. (2023) on top of the study's Approach 3
  law (:func:`plmscale.data_constrained.fit_data_constrained`); its interval propagates the Approach 3
  bootstrap (``R_D*`` refitted under every draw of ``E, A, B, alpha, beta``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from plmscale.data_constrained import fit_data_constrained
from plmscale.fits import Approach3Result, interval
from plmscale.transfer import transfer_entry


def _read(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def learning_curve(metrics_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, validation loss) of a run's logged evaluations, tokens strictly increasing."""
    frame = (
        pl.read_parquet(metrics_path)
        .filter(pl.col("val_loss").is_not_null())
        .sort("num_tokens")
        .unique("num_tokens", keep="last", maintain_order=True)
    )
    return frame["num_tokens"].to_numpy().astype(float), frame["val_loss"].to_numpy().astype(float)


def study_transfer(
    transfer_runs: Sequence[Mapping[str, str]], *, n_points: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The transfer law per evaluated objective from the study's transfer runs.

    ``transfer_runs``: per transfer run, ``done``/``metrics`` of the run and ``scratch_done``/
    ``scratch_metrics`` of its from-scratch baseline. Returns the JSON result and the measured points.
    """
    by_objective: dict[str, list[dict[str, Any]]] = {}
    compute: list[dict[str, Any]] = []
    for run in transfer_runs:
        done, scratch = _read(run["done"]), _read(run["scratch_done"])
        if done.get("init_from") is None:
            raise ValueError(f"{run['done']}: not a transfer run (no init_from); check grid.transfer")
        label = f"{done['run_id'].split('/')[-1].split('-from-')[0]} @ {done['flops_budget']:.3g}"
        by_objective.setdefault(done["objective"], []).append(
            {
                "size": label,
                "n_params": float(done["n_params_non_embedding"]),
                "scratch": learning_curve(run["scratch_metrics"]),
                "transfer": learning_curve(run["metrics"]),
                "source_budget_flops": _source_flops(done),
                "x_source": "tokens of this phase",
            }
        )
        compute.append(
            {
                "run": done["run_id"],
                "init_from": done["init_from"],
                "flops": float(done["flops"]),
                "source_flops": _source_flops(done),
                "total_flops": float(done["flops"]) + _source_flops(done),
                "scratch_run": scratch["run_id"],
                "final_val_loss": float(done["final_val_loss"]),
                "scratch_final_val_loss": float(scratch["final_val_loss"]),
            }
        )
    result: dict[str, Any] = {"form": "D_t = k * (1/D_F)^alpha * N^beta", "n_points_per_run": n_points}
    rows: list[dict[str, Any]] = []
    for objective in ("clm", "mlm"):
        pairs = sorted(by_objective.get(objective, []), key=lambda p: p["n_params"])
        if not pairs:
            result[objective] = {"sizes": [], "skipped_reason": f"no transfer runs evaluated on {objective}"}
            continue
        result[objective], points = transfer_entry(pairs, objective, n_points)
        rows.extend(points)
    result["runs"] = compute
    return result, rows


def _source_flops(done: Mapping[str, Any]) -> float:
    """Training compute of the run a transfer run started from (``results/runs/<run_id>/model``)."""
    budget = str(done["init_from"]).rstrip("/").split("/")[-3]
    return float(budget)


def study_repetition(runs: Sequence[Mapping[str, str]], fit_json: str | Path) -> dict[str, Any]:
    """``R_D*`` of one objective's repetition runs (and their references) on its Approach 3 law.

    ``runs``: ``done`` and ``eval`` paths of every repetition run and every reference run. Unique tokens are
    ``num_tokens / epochs`` (``epochs`` counts passes over the run's training data, capped or not).
    """
    rows = []
    for run in runs:
        done, ev = _read(run["done"]), _read(run["eval"])
        rows.append(
            {
                "run": done["run_id"],
                "n_params": float(done["n_params_non_embedding"]),
                "num_tokens": float(done["num_tokens"]),
                "unique_tokens": float(done["num_tokens"]) / max(float(done["epochs"]), 1.0),
                "epochs": float(done["epochs"]),
                "capped": done.get("unique_tokens") is not None,
                "sources": [use["name"] for use in done.get("sources", [])],
                "val_loss": float(ev["val_loss"]),
            }
        )
    fit = _read(fit_json)
    result: dict[str, Any] = {"objective": fit.get("objective"), "runs": rows}
    a3 = fit.get("approach3") or {}
    if "E" not in a3:
        result["skipped_reason"] = f"no Approach 3 law to build on: {a3.get('skipped_reason')}"
        return result
    base = Approach3Result.from_dict(a3)
    if not base.best_converged:
        result["caveat"] = (
            f"the Approach 3 base law did not converge ({base.best_message}); R_D* is conditional on it"
        )
    n, d, u, y = (
        np.array([r[k] for r in rows]) for k in ("n_params", "num_tokens", "unique_tokens", "val_loss")
    )
    try:
        law = fit_data_constrained(n, d, u, y, base=base, huber_delta=base.huber_delta)
    except ValueError as err:
        result["skipped_reason"] = str(err)
        return result
    result["law"] = law.to_dict()
    for row, predicted in zip(rows, law.predict(n, d, u), strict=True):
        row["predicted_val_loss"] = float(predicted)
    result["interval"] = _r_star_interval(fit.get("approach3_bootstrap") or {}, n, d, u, y, base)
    return result


def _r_star_interval(
    boot: Mapping[str, Any], n: np.ndarray, d: np.ndarray, u: np.ndarray, y: np.ndarray, base: Approach3Result
) -> dict[str, Any]:
    samples = boot.get("samples") or {}
    names = ("E", "A", "B", "alpha", "beta")
    if not all(samples.get(k) for k in names):
        return {"skipped_reason": boot.get("skipped_reason") or "no Approach 3 bootstrap draws to propagate"}
    draws, at_bound = [], 0
    for values in zip(*(samples[k] for k in names), strict=True):
        if not all(v is not None and np.isfinite(v) and v > 0 for v in values):
            continue
        draw = Approach3Result(
            **dict(zip(names, (float(v) for v in values), strict=True)),
            objective=0.0, huber_delta=base.huber_delta, n_points=base.n_points, n_starts=0, n_failed=0,
            failure_messages=(), best_converged=True, best_message="bootstrap draw", n_opt=None, d_opt=None,
            law_reason=None,
        )  # fmt: skip
        law = fit_data_constrained(n, d, u, y, base=draw, huber_delta=base.huber_delta)
        draws.append(law.r_star_d)
        at_bound += law.at_bound
    if len(draws) < 2:
        return {"skipped_reason": f"only {len(draws)} usable Approach 3 draws"}
    return {"r_star_d": interval(draws), "n_draws": len(draws), "n_at_bound": at_bound,
            "unit": "Approach 3 bootstrap draw"}  # fmt: skip
