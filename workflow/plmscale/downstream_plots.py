"""Figure of the downstream comparison (matplotlib, headless); the CSV reader shared with hwbench_plots.

``downstream_compute_figure``: test accuracy against pre-training FLOPs, one panel per (dataset, method),
own runs coloured by objective and external checkpoints (e.g. ESM-2) as labelled stars; the paper's
"compute-optimal beats ESM-2 at equal pre-training compute" view.

Pure helpers (``read_results``, ``unplaced_lines``) compute every number the figure encodes;
``downstream_compute_fig`` turns the frame into the figure; ``downstream_compute_figure`` does the I/O.
The figure is written as PNG and SVG, with its :class:`plmscale.figure_style.FigureFacts` as JSON.

Error bars: the results' bootstrap 95% interval (``test_accuracy_lo``/``_hi``); a row without one gets the
Wilson 95% interval of a proportion from its ``n_test`` proteins (:func:`wilson_interval`). Several own
models at one budget are spread sideways (:func:`dodge_factors`, by model size, smallest left) so their
error bars do not overlap; the x position stays within a few percent of the budget.

The hardware-benchmark figures and tables are in :mod:`plmscale.hwbench_plots`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from plmscale.figure_style import FigureFacts, attach_facts
from plmscale.plots import TITLES, save_figure, style_axes

WILSON_Z = 1.959964  # two-sided 95%
DODGE_DECADES = 0.025  # sideways spacing of models sharing a budget, in decades of FLOPs

OBJECTIVE_COLORS = {"mlm": "tab:blue", "clm": "tab:orange"}
OWN_FALLBACK_COLOR = "tab:gray"
EXTERNAL_COLOR = "crimson"
METHOD_ORDER = ("frozen", "full")

RESULTS_SCHEMA: dict[str, type[pl.DataType]] = {
    "model": pl.String,
    "kind": pl.String,
    "objective": pl.String,
    "dataset": pl.String,
    "method": pl.String,
    "pretrain_flops": pl.Float64,
    "n_params": pl.Int64,
    "test_accuracy": pl.Float64,
    "test_accuracy_lo": pl.Float64,
    "test_accuracy_hi": pl.Float64,
    "test_mcc": pl.Float64,
    "test_mcc_lo": pl.Float64,
    "test_mcc_hi": pl.Float64,
    "majority_accuracy": pl.Float64,
    "best_epoch": pl.Int64,
    "n_train": pl.Int64,
    "n_valid": pl.Int64,
    "n_test": pl.Int64,
}


# --------------------------------------------------------------------------------------------- reading
def _read_table(path: str | Path, schema: dict[str, type[pl.DataType]]) -> pl.DataFrame:
    """Read a CSV with every column as text, then cast the known columns (so an all-empty numeric column,
    e.g. ``pretrain_flops`` of external checkpoints only, stays numeric). Empty table -> ValueError."""
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError as err:
        raise ValueError(f"{path}: empty table (no header, no rows)") from err
    if frame.height == 0:
        raise ValueError(f"{path}: empty table (no rows)")
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    casts = []
    for col, dtype in schema.items():
        text = pl.col(col).str.strip_chars()
        text = pl.when(text == "").then(None).otherwise(text)
        if dtype == pl.String:
            casts.append(text.alias(col))
        elif dtype == pl.Int64:  # "12" and "12.0" both read as 12
            casts.append(text.cast(pl.Float64).round(0).cast(pl.Int64).alias(col))
        else:
            casts.append(text.cast(dtype).alias(col))
    return frame.with_columns(casts)


def read_results(path: str | Path) -> pl.DataFrame:
    """``results/downstream/results.csv``; ``objective`` is null for external checkpoints."""
    return _read_table(path, RESULTS_SCHEMA)


def _ordered(values, order: tuple[str, ...]) -> list[str]:
    values = list(dict.fromkeys(v for v in values if v is not None))
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


# ------------------------------------------------------------------------------ downstream vs compute
def _interval(acc: float, lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None:
        return f"{acc:.3f}"
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}]"


def unplaced_lines(panel: pl.DataFrame) -> list[str]:
    """The rows of one panel without pre-training FLOPs, as "name acc [lo, hi]" (empty if none)."""
    rows = panel.filter(pl.col("pretrain_flops").is_null() | (pl.col("pretrain_flops") <= 0)).sort("model")
    return [
        f"{r['model']} {_interval(r['test_accuracy'], r['test_accuracy_lo'], r['test_accuracy_hi'])}"
        for r in rows.iter_rows(named=True)
    ]


def wilson_interval(accuracy: float, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a proportion p from n trials: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) /
    (1 + z²/n). n = 281, p = 0.70 gives [0.644, 0.751]."""
    if n <= 0:
        raise ValueError(f"n_test must be a positive number of test proteins, got {n}")
    centre = accuracy + z * z / (2 * n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def with_intervals(results: pl.DataFrame) -> pl.DataFrame:
    """Fill a missing ``test_accuracy_lo``/``_hi`` with the Wilson interval from ``n_test`` (left null
    without ``n_test``); ``interval_kind`` says which: "bootstrap", "wilson" or null."""
    rows = []
    for r in results.iter_rows(named=True):
        kind = (
            "bootstrap" if r["test_accuracy_lo"] is not None and r["test_accuracy_hi"] is not None else None
        )
        if kind is None and r["test_accuracy"] is not None and (r.get("n_test") or 0) > 0:
            r["test_accuracy_lo"], r["test_accuracy_hi"] = wilson_interval(r["test_accuracy"], r["n_test"])
            kind = "wilson"
        rows.append({**r, "interval_kind": kind})
    return pl.DataFrame(rows, schema={**results.schema, "interval_kind": pl.String})


def dodge_factors(frame: pl.DataFrame) -> np.ndarray:
    """Multiplicative x offsets: models sharing a pre-training budget are spaced DODGE_DECADES apart in
    log10 FLOPs, centred on the budget, ordered by n_params (then model); a lone model stays put."""
    factors = np.ones(frame.height)
    groups: dict[float, list[tuple]] = {}
    for i, r in enumerate(frame.iter_rows(named=True)):
        groups.setdefault(r["pretrain_flops"], []).append((r["n_params"] or 0, r["model"], i))
    for members in groups.values():
        for rank, (_, _, i) in enumerate(sorted(members)):
            factors[i] = 10 ** (DODGE_DECADES * (rank - (len(members) - 1) / 2))
    return factors


def _yerr(sub: pl.DataFrame) -> np.ndarray:
    acc = sub["test_accuracy"].to_numpy()
    lo = sub["test_accuracy_lo"].fill_null(sub["test_accuracy"]).to_numpy()
    hi = sub["test_accuracy_hi"].fill_null(sub["test_accuracy"]).to_numpy()
    return np.clip(np.vstack([acc - lo, hi - acc]), 0.0, None)


def _compute_panel(ax, panel: pl.DataFrame) -> None:
    placed = panel.filter(pl.col("pretrain_flops").is_not_null() & (pl.col("pretrain_flops") > 0))
    own = placed.filter(pl.col("kind") != "external")
    for objective in _ordered(own["objective"].fill_null("").to_list(), ("mlm", "clm")):
        sub = own.filter(pl.col("objective").fill_null("") == objective).sort("pretrain_flops")
        ax.errorbar(
            sub["pretrain_flops"].to_numpy() * dodge_factors(sub),
            sub["test_accuracy"].to_numpy(),
            yerr=_yerr(sub),
            fmt="o",
            ms=4,
            capsize=2,
            lw=1,
            color=OBJECTIVE_COLORS.get(objective, OWN_FALLBACK_COLOR),
            label=f"this study, {TITLES.get(objective, objective or 'unknown objective')}",
        )
    external = placed.filter(pl.col("kind") == "external").sort("pretrain_flops")
    if external.height:
        ax.errorbar(
            external["pretrain_flops"].to_numpy(),
            external["test_accuracy"].to_numpy(),
            yerr=_yerr(external),
            fmt="*",
            ms=10,
            capsize=2,
            lw=1,
            color=EXTERNAL_COLOR,
            label="external checkpoint",
        )
        for r in external.iter_rows(named=True):
            ax.annotate(
                r["model"],
                (r["pretrain_flops"], r["test_accuracy"]),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=7,
                color=EXTERNAL_COLOR,
            )
    majority = panel["majority_accuracy"].drop_nulls()
    if majority.len():
        ax.axhline(majority[0], color="0.4", ls="--", lw=1, label=f"majority class ({majority[0]:.3f})")
    lines = unplaced_lines(panel)
    if lines:
        ax.text(
            0.98,
            0.02,
            "not placed (no pre-training FLOPs):\n" + "\n".join(lines),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=6,
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.6", "alpha": 0.9},
        )
    dataset, method = panel["dataset"][0], panel["method"][0]
    style_axes(
        ax, xlabel="pre-training compute (FLOPs)", title=f"{dataset} · {method}", fontsize=6, loc="best"
    )
    ax.tick_params(axis="x", which="both", labelsize=7)


def downstream_compute_fig(results: pl.DataFrame):
    """Grid of panels: rows = datasets, columns = methods (frozen, full); test accuracy vs pre-training
    FLOPs (log) with bootstrap 95% error bars."""
    if results.height == 0:
        raise ValueError("no downstream results to plot")
    results = with_intervals(results)
    datasets = sorted(set(results["dataset"].to_list()))
    methods = _ordered(results["method"].to_list(), METHOD_ORDER)
    fig, axes = plt.subplots(
        len(datasets), len(methods), figsize=(5.2 * len(methods), 3.9 * len(datasets)), squeeze=False
    )
    for i, dataset in enumerate(datasets):
        for j, method in enumerate(methods):
            panel = results.filter((pl.col("dataset") == dataset) & (pl.col("method") == method))
            if panel.height == 0:
                axes[i][j].set_visible(False)
                continue
            _compute_panel(axes[i][j], panel)
    kinds = sorted(set(results["interval_kind"].drop_nulls().to_list()))
    names = {"bootstrap": "bootstrap 95% interval", "wilson": "Wilson 95% interval from n test proteins"}
    bars = " / ".join(names[k] for k in kinds) or "none (no interval in the results)"
    fig.supylabel("test accuracy")
    fig.suptitle(f"Downstream accuracy vs pre-training compute (error bars: {bars})")
    fig.tight_layout()
    facts = FigureFacts("downstream_compute", intervals=[f"error bars: {names[k]}" for k in kinds])
    facts.budgets = sorted(set(results["pretrain_flops"].drop_nulls().to_list()))
    facts.notes.append("own models sharing a budget are spread sideways by model size (smallest left)")
    attach_facts(fig, facts)
    return fig


def downstream_compute_figure(results_csv: str, png: str, svg: str, *, dpi: int) -> None:
    save_figure(downstream_compute_fig(read_results(results_csv)), png, svg, dpi)
