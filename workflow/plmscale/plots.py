"""The study's figures (matplotlib, headless): log axes with units, fitted laws with their formula and
the method named on every figure.  Each figure is written as PNG and SVG.

A law is drawn only when :func:`plmscale.fitting.law_status` says it was fitted (and, for Approach 3,
converged); otherwise the legend says "Approach N: not fitted — <reason>" and no line is drawn. Where the
fit result has the method's bootstrap, the law is drawn with its pointwise 95% band (shaded) and the 95%
interval of its exponent in brackets in the legend.

Every figure function returns a matplotlib Figure carrying a :class:`plmscale.figure_style.FigureFacts`
(read it with :func:`plmscale.figure_style.facts_of`); :func:`save_figure` writes it next to the PNG as
``<figure>.json`` (its keys are listed in :mod:`plmscale.figure_style`). Tick labels on log axes are plain
(:func:`plain_log_ticks`); a budget has one colour in every figure (:func:`budget_colors` of the study's
full budget list).

IsoFLOP minima: a budget's parabola vertex inside the sampled sizes is a filled star in the budget's
colour; a vertex outside them (extrapolated) is a hollow star on the parabola at the nearest sampled size,
with an arrow pointing towards the vertex and its N written next to it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from plmscale.figure_style import (
    VERTEX_INSIDE_LABEL,
    VERTEX_OUTSIDE_LABEL,
    FigureFacts,
    attach_facts,
    budget_colors,
    dedupe_labels,
    draw_vertex,
    facts_of,
    law_record,
    neutral_legend_handles,
    plain_log_ticks,
    sequential_colors,
    si_number,
    study_budgets,
    write_facts,
)
from plmscale.fitting import bootstrap_of, exponent_interval, law_bands, law_status

__all__ = ["FigureFacts", "budget_colors", "facts_of", "plain_log_ticks", "sequential_colors"]

TITLES = {"clm": "CLM (causal LM)", "mlm": "MLM (masked LM)"}


def save_figure(fig, png: str, svg: str, dpi: int) -> None:
    """Write ``fig`` as PNG and SVG and, when it carries facts, ``<png stem>.json``; each atomically."""
    facts = facts_of(fig)
    if facts is not None:
        write_facts(Path(png).with_suffix(".json"), facts)
    for path, kwargs in ((png, {"dpi": dpi}), (svg, {})):
        tmp = Path(path).with_name(f".{Path(path).stem}.tmp{Path(path).suffix}")
        fig.savefig(tmp, bbox_inches="tight", **kwargs)
        tmp.replace(path)
    plt.close(fig)


def style_axes(
    ax,
    *,
    xlabel: str,
    ylabel: str | None = None,
    title: str | None = None,
    logy: bool = False,
    fontsize: float = 8,
    legend_title: str | None = None,
    **legend_kw: Any,
) -> None:
    """The frame every figure here shares: log x (and log y with ``logy``), axis labels with units, an
    optional title, a light grid on major and minor ticks, plain tick labels on log axes
    (:func:`plain_log_ticks`) and a legend of the labelled artists, if any (``legend_kw`` goes to it)."""
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    plain_log_ticks(ax)
    if not ax.get_legend_handles_labels()[1]:
        return  # nothing labelled: no empty legend box
    if legend_title is not None:
        legend_kw = {"title": legend_title, **legend_kw}
    ax.legend(fontsize=fontsize, **legend_kw)


def law_label(name: str, law: dict[str, Any]) -> str:
    return f"{name} = {law['coefficient']:.3g} · C^{law['exponent']:.3f}"


APPROACH_NAMES = {"approach1": "Approach 1", "approach2": "Approach 2", "approach3": "Approach 3"}
METHOD_NAMES = {"notebook_envelope": "authors' notebook", **APPROACH_NAMES}
METHOD_STYLES = {
    "notebook_envelope": ("^", "tab:red"),
    "approach1": ("s", "tab:blue"),
    "approach2": ("o", "tab:orange"),
    "approach3": (None, "tab:green"),
}
LAW_NAMES = {"n_opt": "N_opt", "d_opt": "D_opt", "loss": "L"}
CI_LEGEND_TITLE = "shaded band, [ ]: 95% bootstrap interval"


def not_fitted_label(method: str, reason: str, width: int = 60) -> str:
    """Legend text of a law that is not drawn: "Approach N: not fitted — <reason>" (wrapped)."""
    return textwrap.fill(f"{METHOD_NAMES.get(method, method)}: not fitted — {reason}", width)


def interval_label(method: str, law_key: str, law: dict[str, Any], ci: tuple[float, float] | None) -> str:
    """``"Approach 2: N_opt = 1.2e+03 · C^0.610 [0.520, 0.700]"``; brackets: 95% interval of the exponent."""
    text = f"{METHOD_NAMES.get(method, method)}: {law_label(LAW_NAMES.get(law_key, law_key), law)}"
    return text if ci is None else f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]"


def note_not_fitted(ax, method: str, reason: str) -> None:
    """A legend-only entry (no data) naming a law that was not drawn and why."""
    ax.plot([], [], linestyle="none", label=not_fitted_label(method, reason))


def draw_law(
    ax,
    fit: dict[str, Any],
    method: str,
    law_key: str,
    c: np.ndarray,
    color: Any,
    facts: FigureFacts | None = None,
) -> bool:
    """Draw ``method``'s ``law_key`` law over ``c`` with its 95% bootstrap band, or a "not fitted" legend
    entry when the law is missing or untrusted; returns whether a band (or exponent interval) was drawn.
    ``facts.laws`` gets a record of what was drawn and why not."""
    law = (fit.get(method) or {}).get(law_key)
    reason = law_status(fit, method) if law_key != "loss" else None
    if law_key == "loss" and not law:
        reason = (fit.get(method) or {}).get("skipped_reason") or "no L(C) law in the fit result"
    record = law_record(method, law_key)
    if facts is not None:
        facts.laws.append(record)
    if reason is not None or not law:
        record["reason"] = reason or "no law in the fit result"
        note_not_fitted(ax, method, record["reason"])
        return False
    boot = bootstrap_of(fit, method)
    ci = exponent_interval(boot, law_key)
    band = law_bands(boot, c, laws=(law_key,)).get(law_key)
    if band is None:  # no per-draw samples stored: the bands written by the fit stage, on their own grid
        band = (fit.get(f"{method}_bands") or {}).get(law_key)
    if band is not None:
        ax.fill_between(band["flops"], band["lo"], band["hi"], color=color, alpha=0.18, lw=0)
    y = law["coefficient"] * c ** law["exponent"]
    ax.plot(c, y, "-", color=color, label=interval_label(method, law_key, law, ci))
    record.update(drawn=True, band=band is not None, exponent_ci=None if ci is None else list(ci))
    if facts is not None and band is not None:
        facts.intervals.append(f"{METHOD_NAMES.get(method, method)} {law_key}: pointwise 95% bootstrap band")
    return band is not None or ci is not None


def isoflop_figure(runs: pl.DataFrame, fit: dict[str, Any], objective: str, *, source: str = ""):
    """Final loss against N per budget (``runs``: ``flops_budget``, ``n_params``, ``val_loss``) with each
    budget's Approach 2 parabola and minimum (:func:`draw_vertex`); the seed spread where replicated.
    ``source`` names the data in the title (e.g. "the published logs")."""
    fig, ax = plt.subplots(figsize=(9.6, 4.4))
    budgets = sorted(set(runs["flops_budget"].to_list()))
    colors = budget_colors(study_budgets(runs, fit))
    facts = FigureFacts("isoflop", objective, budgets=budgets)
    facts.budget_colors = {f"{b:g}": colors[b] for b in budgets}
    a2 = {b["budget"]: b for b in fit.get("approach2", {}).get("budgets", [])}
    minima = []
    for budget in budgets:
        sub = runs.filter(pl.col("flops_budget") == budget).sort("n_params")
        info = a2.get(budget) or {}
        label = f"C = {budget:.1e} FLOPs"
        if info.get("skipped_reason"):
            label = textwrap.fill(f"{label} — {info['skipped_reason']}", 52)
            facts.no_minimum.append({"budget": budget, "reason": info["skipped_reason"]})
        ax.plot(sub["n_params"], sub["val_loss"], "o", color=colors[budget], label=label)
        spread = [p for p in fit.get("seed_spread", {}).get("points", []) if p["flops_budget"] == budget]
        if spread:  # the seed spread of each replicated point: the noise floor the minima must beat
            ax.vlines([p["n_params"] for p in spread], [p["lo"] for p in spread], [p["hi"] for p in spread],
                      color=colors[budget], lw=2.5, alpha=0.5)  # fmt: skip
        if info.get("coefficients"):
            c2, c1, c0 = info["coefficients"]
            x = np.geomspace(sub["n_params"].min() / 1.3, sub["n_params"].max() * 1.3, 100)
            lx = np.log(x)
            ax.plot(x, c2 * lx**2 + c1 * lx + c0, "-", color=colors[budget], alpha=0.7)
            if info.get("n_opt"):
                minima.append((info, sub["n_params"].to_numpy(), colors[budget]))
    facts.vertices = [draw_vertex(ax, *minimum) for minimum in minima]  # after the points: legend order
    facts.extrapolated = [v["budget"] for v in facts.vertices if v["extrapolated"]]
    for vertex in facts.vertices:  # what Approach 2's N_opt(C) law left out (fit.approach2_exclude_edge)
        vertex["excluded_from_law"] = vertex["at_edge"] and bool(fit.get("approach2", {}).get("exclude_edge"))
    dedupe_labels(ax)
    reason = law_status(fit, "approach2")
    facts.laws.append(law_record("approach2", "n_opt", reason=reason))
    if reason is not None:  # the per-budget minima are shown, but no N_opt(C) law comes out of them
        note_not_fitted(ax, "approach2", f"no N_opt(C) law: {reason}")
    noise = fit.get("seed_spread", {})
    if noise.get("n_points"):
        ax.plot([], [], "-", lw=2.5, color="grey", alpha=0.5,
                label=f"seed spread ({noise['seeds_per_point']} seeds): median sd {noise['median_sd']:.4f}, "
                f"max range {noise['max_range']:.4f} nats")  # fmt: skip
        facts.intervals.append("vertical bars: seed spread (min..max over seeds) of replicated points")
    style_axes(
        ax,
        xlabel="non-embedding parameters N",
        ylabel="validation loss (nats/token)",
        title=f"IsoFLOP profiles{_from(source)}, {TITLES[objective]} — Approach 2 (parabola in log N)",
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    fig.tight_layout()
    neutral_legend_handles(ax, (VERTEX_INSIDE_LABEL, VERTEX_OUTSIDE_LABEL))
    attach_facts(fig, facts)
    return fig


def _from(source: str) -> str:
    return f" from {source}" if source else ""


def optimal_figure(fit: dict[str, Any], objective: str, *, source: str = ""):
    """N_opt(C) and D_opt(C): every method's law with its 95% band and exponent interval, the points it was
    fitted to, a "not fitted" entry for a law that is missing or untrusted. The authors' notebook method is
    drawn when the fit has it (the published logs); the published exponents are printed when given."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 6.0))
    facts = FigureFacts("optimal_allocation", objective, budgets=sorted(fit.get("budgets") or []))
    styles = METHOD_STYLES
    methods = [m for m in METHOD_NAMES if m in APPROACH_NAMES or m in fit]
    for panel, (key, unit) in enumerate((("n_opt", "parameters N_opt"), ("d_opt", "tokens D_opt"))):
        ax = axes[panel]
        cs: list[float] = []
        a1 = fit.get("approach1", {})
        if "envelope" in a1:
            env = a1["envelope"]
            pts = env["n_params"] if key == "n_opt" else env["num_tokens"]
            ax.plot(env["flops"], pts, styles["approach1"][0], color=styles["approach1"][1], alpha=0.5,
                    label="Approach 1: envelope points")  # fmt: skip
            cs += env["flops"]
        notebook = (fit.get("notebook_envelope") or {}).get("envelope")
        if notebook:
            marker, color = styles["notebook_envelope"]
            column = "n_params" if key == "n_opt" else "num_tokens"
            ax.plot([p["flops"] for p in notebook], [p[column] for p in notebook], marker, ms=3, color=color,
                    alpha=0.35, label="authors' notebook: envelope points")  # fmt: skip
            cs += [p["flops"] for p in notebook]
        a2 = fit.get("approach2", {})
        usable = [b for b in a2.get("budgets", []) if b.get(key)]
        if usable:
            inner = [b for b in usable if not b.get("at_edge")]
            edge = [b for b in usable if b.get("at_edge")]
            color = styles["approach2"][1]
            if inner:
                ax.plot([b["budget"] for b in inner], [b[key] for b in inner], "o", color=color,
                        label="Approach 2: IsoFLOP minima")  # fmt: skip
            excluded = " (excluded)" if a2.get("exclude_edge") else ""
            if edge:
                ax.plot([b["budget"] for b in edge], [b[key] for b in edge], "o", mfc="none", color=color,
                        label=f"Approach 2: minimum at grid edge{excluded}")  # fmt: skip
                facts.notes.append(f"{key}: hollow circles are IsoFLOP minima at the grid edge{excluded}")
            cs += [b["budget"] for b in usable]
        if not cs:
            notes = [not_fitted_label(m, law_status(fit, m) or "no law") for m in methods]
            ax.text(0.5, 0.5, "no usable fit\n" + "\n".join(notes), transform=ax.transAxes, ha="center",
                    va="center", fontsize=7)  # fmt: skip
            continue
        c = np.geomspace(min(cs) / 2, max(cs) * 2, 50)
        banded = [draw_law(ax, fit, method, key, c, styles[method][1], facts) for method in methods]
        published = fit.get("published") or {}
        if f"{key}_exponent" in published:
            text = f"published exponent {published[f'{key}_exponent']} ({published.get('source', '')})"
            ax.text(0.02, 0.97, text, transform=ax.transAxes, fontsize=6, va="top")
        style_axes(ax, xlabel="training compute C (FLOPs, 6ND)", ylabel=unit, logy=True, fontsize=7,
                   legend_title=CI_LEGEND_TITLE if any(banded) else None, title_fontsize=7,
                   loc="upper left", bbox_to_anchor=(0.0, -0.2), frameon=False)  # fmt: skip
    names = ", ".join(METHOD_NAMES[m] for m in methods)
    fig.suptitle(f"Compute-optimal allocation{_from(source)}, {TITLES[objective]} — {names}", fontsize=10)
    fig.tight_layout()
    attach_facts(fig, facts)
    return fig


def loss_compute_figure(curves: pl.DataFrame, fit: dict[str, Any], objective: str, *, source: str = ""):
    """Every logged (compute, loss) point as learning curves (``curves``: ``run``, ``flops``, ``val_loss``),
    the Approach 1 envelope and its L(C) law with the 95% band. With a ``flops_budget`` column each curve
    has its budget's colour (as in the IsoFLOP figure), else grey."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    facts = FigureFacts("loss_vs_compute", objective)
    by_budget = "flops_budget" in curves.columns and curves["flops_budget"].null_count() < curves.height
    colors = budget_colors(study_budgets(curves, fit)) if by_budget else {}
    for run in curves["run"].unique(maintain_order=True).to_list():
        sub = curves.filter(pl.col("run") == run).sort("flops")
        budget = sub["flops_budget"][0] if by_budget else None
        color = colors.get(budget, "0.6")
        ax.plot(sub["flops"], sub["val_loss"], "-", color=color, lw=0.8, alpha=0.6)
    if by_budget:
        facts.budgets = sorted(set(curves["flops_budget"].drop_nulls().to_list()))
        facts.budget_colors = {f"{b:g}": colors[b] for b in facts.budgets}
    a1 = fit.get("approach1", {})
    banded = False
    if "envelope" in a1:
        env = a1["envelope"]
        ax.plot(env["flops"], env["loss"], "o", color="tab:red", ms=4, label="minimum-loss envelope")
        c = np.geomspace(min(env["flops"]), max(env["flops"]), 50)
        banded = draw_law(ax, fit, "approach1", "loss", c, "tab:red", facts)
    else:
        reason = a1.get("skipped_reason") or "no envelope in the fit result"
        facts.laws.append(law_record("approach1", "loss", reason=reason))
        note_not_fitted(ax, "approach1", reason)
    style_axes(
        ax,
        xlabel="training compute C (FLOPs, 6ND)",
        ylabel="validation loss (nats/token)",
        title=f"Loss vs compute{_from(source)}, {TITLES[objective]} — Approach 1 (envelope)"
        + ("\nlines: learning curves, coloured by budget C as in the IsoFLOP figure" if by_budget else ""),
        logy=True,
        fontsize=8,
        legend_title=CI_LEGEND_TITLE if banded else None,
        title_fontsize=8,
    )
    attach_facts(fig, facts)
    return fig


def learning_curves_figure(curves: pl.DataFrame, objective: str, *, budgets_all: list[float] | None = None):
    """One panel per budget (its title in the budget's colour, from ``budgets_all``, the study's budgets);
    one curve per model size, a size's colour (plasma) the same in every panel."""
    budgets = sorted(set(curves["flops_budget"].to_list()))
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.8), sharey=True, squeeze=False)
    color = sequential_colors(curves["n_params"].to_list(), "plasma", top=0.85)
    colors = budget_colors(sorted(set(budgets_all or []) | set(budgets)))
    facts = FigureFacts("learning_curves", objective, budgets=budgets)
    facts.budget_colors = {f"{b:g}": colors[b] for b in budgets}
    for ax, budget in zip(axes[0], budgets, strict=True):
        sub = curves.filter(pl.col("flops_budget") == budget)
        for n in sorted(set(sub["n_params"].to_list())):
            run = sub.filter(pl.col("n_params") == n).sort("num_tokens")
            ax.plot(
                run["num_tokens"], run["val_loss"], "o-", ms=3, color=color[n], label=f"N = {si_number(n)}"
            )
        style_axes(ax, xlabel="training tokens D", title=f"C = {budget:.1e} FLOPs", fontsize=7)
        ax.title.set_color(colors[budget])
    axes[0][0].set_ylabel("validation loss (nats/token)")
    fig.suptitle(f"Learning curves, {TITLES[objective]} (line colour: model size N, same in every panel)")
    fig.tight_layout()
    attach_facts(fig, facts)
    return fig


def objective_figures(
    runs: pl.DataFrame, curves: pl.DataFrame, fit: dict[str, Any], objective: str
) -> dict[str, Any]:
    """The four figures of one objective (matplotlib Figures, not yet saved), keyed by name."""
    return {
        "isoflop": isoflop_figure(runs, fit, objective),
        "optimal_allocation": optimal_figure(fit, objective),
        "loss_vs_compute": loss_compute_figure(curves, fit, objective),
        "learning_curves": learning_curves_figure(curves, objective, budgets_all=fit.get("budgets")),
    }


def plot_objective(
    runs_path: str, curves_path: str, fits_path: str, outputs: dict[str, str], *, objective: str, dpi: int
) -> None:
    runs = pl.read_parquet(runs_path)
    curves = pl.read_parquet(curves_path)
    fit = json.loads(Path(fits_path).read_text())
    for name, fig in objective_figures(runs, curves, fit, objective).items():
        save_figure(fig, outputs[f"{name}_png"], outputs[f"{name}_svg"], dpi)
