"""Figures of the paper reproduced from the published logs. The IsoFLOP profiles, the compute-optimal
allocation (every method, the authors' notebook included, with bootstrap bands) and loss vs compute are
drawn by the study's own figure functions (:mod:`plmscale.plots`), so both show the same things the same
way; here are the figures only the logs have: the extrapolation check, UniRef50 vs UniMeta learning curves
(the paper's Figure 1), the mask-ratio ablation and CLM<->MLM transfer (the transfer-law panel is shared
with the study's transfer runs).

Colours: a model size has one colour in every panel of a figure (:func:`size_colors`, from all sizes of the
figure); the mask-ratio curves are coloured by mask ratio (sequential map with a colour bar) and styled by
size, so no colour is reused for two things. Every figure carries :class:`FigureFacts`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from plmscale.figure_style import (
    FigureFacts,
    attach_facts,
    dedupe_labels,
    law_record,
    sequential_colors,
)
from plmscale.plots import (
    TITLES,
    isoflop_figure,
    loss_compute_figure,
    optimal_figure,
    save_figure,
    style_axes,
)

SOURCE = "the published logs"
SIZE_UNITS = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "b": 1e9, "G": 1e9}
SIZE_STYLES = ("-", "--", ":", "-.")


def size_value(label: str) -> float:
    """``"150M" -> 1.5e8``, ``"1.2B" -> 1.2e9``; a label that is not a size sorts last (inf)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kKMBbG]?)\s*", str(label))
    return float(match.group(1)) * SIZE_UNITS[match.group(2)] if match else float("inf")


def size_colors(labels, cmap: str = "viridis") -> dict[str, str]:
    """Size label -> colour by the size's rank among ``labels`` (all sizes of the figure, every panel)."""
    ordered = sorted(set(labels), key=lambda s: (size_value(s), s))
    ranks = sequential_colors(range(len(ordered)), cmap)
    return {label: ranks[i] for i, label in enumerate(ordered)}


def extrapolation(fit: dict[str, Any], objective: str):
    """Predicted (diamonds) vs observed (open circles) N_opt at each held-out budget, per method."""
    fig, ax = plt.subplots(figsize=(7, 4.6))
    facts = FigureFacts("extrapolation", objective)
    for method, color in (("approach2", "tab:orange"), ("approach3", "tab:green")):
        ext = fit.get("extrapolation", {}).get(method, {})
        rows = ext.get("held_out") or ext.get("budgets") or []
        rows = [r for r in rows if r.get("predicted_n_opt") and r.get("observed_n_opt")]
        if not rows:
            facts.notes.append(f"{method}: no held-out budget with both a predicted and an observed N_opt")
            continue
        facts.budgets = sorted(set(facts.budgets) | {r["budget"] for r in rows})
        ax.plot(
            [r["budget"] for r in rows],
            [r["predicted_n_opt"] for r in rows],
            "D",
            color=color,
            label=f"{method}: predicted from budgets ≤ {ext.get('cutoff_flops', 0):.0e}",
        )
        ax.plot([r["budget"] for r in rows], [r["observed_n_opt"] for r in rows], "o", mfc="none", color="k")
        for r in rows:
            ax.annotate(
                f"{100 * (r['predicted_n_opt'] / r['observed_n_opt'] - 1):+.0f}%",
                (r["budget"], r["predicted_n_opt"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
                color=color,
            )
    ax.plot([], [], "o", mfc="none", color="k", label="observed N_opt (parabola of the held-out budget)")
    style_axes(
        ax,
        xlabel="held-out compute budget C (FLOPs)",
        ylabel="N_opt (parameters)",
        title=f"Extrapolation check, {TITLES[objective]}",
        logy=True,
        fontsize=7,
    )
    attach_facts(fig, facts)
    return fig


def _curves_panel(ax, frame: pl.DataFrame, group_cols: list[str], x: str, y: str, style) -> None:
    """One line per group; ``style(key) -> (colour, linestyle, label or None)``."""
    for key, sub in frame.group_by(group_cols, maintain_order=True):
        key = key if isinstance(key, tuple) else (key,)
        color, linestyle, label = style(key)
        ax.plot(sub.sort(x)[x], sub.sort(x)[y], linestyle, lw=1, color=color, label=label or "_nolegend_")


def ur50_vs_unimeta(ur50: pl.DataFrame):
    valid = ur50.filter(pl.col("split") == "valid") if "split" in ur50.columns else ur50
    if "variant" in valid.columns:
        valid = valid.filter(pl.col("variant").is_null() | (pl.col("variant") == ""))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    colors = size_colors(valid["size"].to_list())
    datasets = sorted(set(valid["dataset"].to_list()), reverse=True)  # ur50 solid, unimeta dashed
    styles = {d: SIZE_STYLES[i % len(SIZE_STYLES)] for i, d in enumerate(datasets)}
    for ax, objective in zip(axes, ("clm", "mlm"), strict=True):
        sub = valid.filter(pl.col("objective") == objective).sort("dataset", descending=True)
        _curves_panel(ax, sub, ["dataset", "size"], "tokens", "loss",
                      lambda key: (colors[key[1]], styles[key[0]], f"{key[0]} {key[1]}"))  # fmt: skip
        style_axes(
            ax,
            xlabel="training tokens",
            ylabel="validation loss (nats/token)",
            title=f"{TITLES[objective]}: UniRef50 only vs UniMeta200B",
            fontsize=7,
        )
    fig.suptitle(
        "Repeating UniRef50 vs adding metagenomic data (the paper's Figure 1), published logs; "
        "colour: model size, line style: data set"
    )
    fig.tight_layout()
    facts = FigureFacts(
        "ur50_vs_unimeta", "both", notes=[f"size colours: {colors}", f"data set styles: {styles}"]
    )
    attach_facts(fig, facts)
    return fig


def mask_ratio(frame: pl.DataFrame):
    """Left: final loss (mean of the last 5 points) against mask ratio, one line per size. Right: every
    learning curve, coloured by mask ratio (colour bar) and styled by size (legend); no colour reused."""
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), width_ratios=(1, 1.15))
    x = "step" if "step" in frame.columns else frame.columns[2]
    last = (
        frame.sort(x).group_by(["size", "mask_ratio"]).agg(pl.col("loss").tail(5).mean()).sort("mask_ratio")
    )
    sizes = sorted(set(frame["size"].to_list()), key=lambda s: (size_value(s), s))
    styles = {size: SIZE_STYLES[i % len(SIZE_STYLES)] for i, size in enumerate(sizes)}
    ratios = sorted(set(frame["mask_ratio"].to_list()))
    cmap = plt.get_cmap("plasma")
    norm = matplotlib.colors.Normalize(min(ratios), max(ratios) if len(ratios) > 1 else min(ratios) + 1)
    for size in sizes:
        sub = last.filter(pl.col("size") == size)
        axes[0].plot(sub["mask_ratio"], sub["loss"], styles[size], color="0.3", lw=1.2, label=f"N = {size}")
        axes[0].scatter(
            sub["mask_ratio"], sub["loss"], c=cmap(norm(sub["mask_ratio"].to_numpy())), s=30, zorder=3
        )
    axes[0].set_xlabel("mask ratio")
    axes[0].set_ylabel("final validation loss on masked positions (nats/token)")
    axes[0].set_title("Final loss vs mask ratio (mean of last 5 points)")
    axes[0].legend(fontsize=8, title="line style: size", title_fontsize=8)
    axes[0].grid(True, alpha=0.3)
    _curves_panel(axes[1], frame.sort("size", "mask_ratio"), ["size", "mask_ratio"], x, "loss",
                  lambda key: (cmap(norm(key[1])), styles[key[0]], f"N = {key[0]}"))  # fmt: skip
    dedupe_labels(axes[1])
    axes[1].set_xlabel(x)
    axes[1].set_ylabel("validation loss (nats/token)")
    axes[1].set_title("Learning curves by mask ratio")
    axes[1].legend(fontsize=8, title="line style: size", title_fontsize=8)
    for handle in axes[1].get_legend().legend_handles:
        handle.set_color("0.3")
    axes[1].grid(True, alpha=0.3)
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[1], pad=0.02)
    bar.set_label("mask ratio")
    fig.suptitle(
        "MLM mask-ratio ablation (published logs; losses are on masked positions, so not strictly comparable)"
    )
    fig.tight_layout()
    facts = FigureFacts("mask_ratio", "mlm", notes=[f"size line styles: {styles}", f"mask ratios: {ratios}"])
    attach_facts(fig, facts)
    return fig


def transfer(frame: pl.DataFrame):
    """Validation loss against tokens of the (second) training phase: from a checkpoint of the other
    objective (solid) vs from scratch (dashed), same size and budget (the `tokens/` logs). One legend entry
    per size (its colour, the same in both panels); the line style is named in the title."""
    frame = frame.filter((pl.col("kind") == "tokens") & (pl.col("metric") == "valid_loss"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    colors = size_colors(frame["size"].to_list())
    for ax, objective in zip(axes[0], ("clm", "mlm"), strict=True):
        sub = frame.filter(pl.col("objective") == objective)
        for size in sorted(set(sub["size"].to_list()), key=lambda s: (size_value(s), s)):
            for pretrained, style in ((True, "-"), (False, "--")):
                run = sub.filter((pl.col("size") == size) & (pl.col("pretrained") == pretrained)).sort("step")
                if run.height:
                    ax.plot(run["step"], run["value"], style, lw=1, color=colors[size], label=f"N = {size}")
        dedupe_labels(ax)
        source = "MLM" if objective == "clm" else "CLM"
        style_axes(
            ax,
            xlabel="training tokens (this phase)",
            ylabel="validation loss (nats/token)",
            title=f"{objective.upper()}: from {source} (solid) vs from scratch (dashed)",
            fontsize=7,
        )
        for handle in ax.get_legend().legend_handles if ax.get_legend() else ():
            handle.set_linestyle("-")  # the entry is the size's colour; the style is named in the title
    fig.suptitle("CLM <-> MLM transfer (published logs); colour: model size")
    fig.tight_layout()
    attach_facts(fig, FigureFacts("transfer", "both", notes=[f"size colours: {colors}"]))
    return fig


def transfer_law(law: dict[str, Any], points: pl.DataFrame, *, source: str = "the published logs"):
    """Effectively transferred tokens D_t against fine-tuning tokens D_F, per model size, with the fitted
    ``D_t = k (1/D_F)^alpha N^beta`` drawn at each size's N; points the law could not use are hollow."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), squeeze=False)
    facts = FigureFacts("transfer_law", "both")
    for ax, objective in zip(axes[0], ("clm", "mlm"), strict=True):
        entry = law.get(objective, {})
        sub = points.filter(pl.col("objective") == objective) if points.height else points
        sizes = entry.get("sizes", [])
        fit = entry.get("law")
        colors = sequential_colors(range(len(sizes)))  # sizes come in ascending N
        for i, size in enumerate(sizes):
            color = colors[i]
            run = sub.filter(pl.col("size") == size)
            ok = run.filter(pl.col("status") == "ok")
            ax.plot(ok["finetune_tokens"], ok["transferred_tokens"], "o", ms=4, color=color, label=size)
            if fit and ok.height:
                d_f = np.geomspace(ok["finetune_tokens"].min(), ok["finetune_tokens"].max(), 30)
                n = float(run["n_params"][0])
                ax.plot(d_f, fit["k"] * d_f ** -fit["alpha"] * n ** fit["beta"], "-", lw=1, color=color)
        if fit:
            loo = entry.get("leave_one_size_out", {})
            spread = ", ".join(f"{p} {lo:.2f}..{hi:.2f}" for p, (lo, hi) in loo.items())
            source = "MLM" if objective == "clm" else "CLM"
            formula = f"D_t = {fit['k']:.3g} (1/D_F)^{fit['alpha']:.3f} N^{fit['beta']:.3f}"
            title = f"{objective.upper()} from {source}: {formula}\n(leave one size out: {spread})"
            facts.laws.append({**law_record(objective, "transfer"), "drawn": True})
            facts.intervals.append(f"{objective}: leave-one-size-out range of alpha and beta (title)")
        else:
            title = f"{objective.upper()}: not fitted ({entry.get('skipped_reason', 'no pairs')})"
            facts.laws.append(
                law_record(objective, "transfer", reason=entry.get("skipped_reason", "no pairs"))
            )
        style_axes(
            ax,
            xlabel="fine-tuning tokens D_F (target objective)",
            ylabel="effectively transferred tokens D_t",
            title=title,
            logy=True,
            fontsize=7,
            legend_title="model size N",
        )
        ax.title.set_fontsize(8)
    fig.suptitle(f"Transfer scaling from {source}: tokens a pre-trained start is worth (lines: fit)")
    fig.tight_layout()
    attach_facts(fig, facts)
    return fig


def plot_paper(inputs: dict[str, Any], outputs: dict[str, str], *, dpi: int) -> None:
    points = pl.read_parquet(inputs["points"]).filter(pl.col("duplicate_of").is_null())
    finals = pl.read_parquet(inputs["finals"]).filter(pl.col("duplicate_of").is_null())
    for path in inputs["fits"]:
        fit = json.loads(Path(path).read_text())
        o = fit["objective"]
        pts = points.filter(pl.col("objective") == o)
        fin = finals.filter(pl.col("objective") == o)
        # the study's own figure functions (plmscale.plots), on the logs' tables in their column names
        iso = fin.filter(pl.col("budget_flops").is_not_null()).rename(
            {"budget_flops": "flops_budget", "loss": "val_loss"}
        )
        curves = pts.select("run", "flops", val_loss="loss", flops_budget="budget_flops")
        for name, fig in (
            ("isoflop", isoflop_figure(iso, fit, o, source=SOURCE)),
            ("optimal_allocation", optimal_figure(fit, o, source=SOURCE)),
            ("loss_vs_compute", loss_compute_figure(curves, fit, o, source=SOURCE)),
            ("extrapolation", extrapolation(fit, o)),
        ):
            save_figure(fig, outputs[f"{o}_{name}_png"], outputs[f"{o}_{name}_svg"], dpi)
    extra = {
        "ur50_vs_unimeta": ur50_vs_unimeta(pl.read_parquet(inputs["ur50"])),
        "mask_ratio": mask_ratio(pl.read_parquet(inputs["mask_ratio"])),
        "transfer": transfer(pl.read_parquet(inputs["transfer"])),
        "transfer_law": transfer_law(
            json.loads(Path(inputs["transfer_law"]).read_text()), pl.read_csv(inputs["transfer_points"])
        ),
    }
    for name, fig in extra.items():
        save_figure(fig, outputs[f"{name}_png"], outputs[f"{name}_svg"], dpi)
