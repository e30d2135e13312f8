"""Figures of the study's transfer and repetition runs (the published logs' figures are in
:mod:`plmscale.paper_plots`; the transfer-law panel is shared)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from plmscale.figure_style import FigureFacts, attach_facts, law_record, sequential_colors
from plmscale.plots import TITLES, style_axes
from plmscale.study_laws import learning_curve


def repetition_figure(result: dict[str, Any], curves: dict[str, str], objective: str):
    """The paper's Figure 1 view on our runs: learning curves of the capped (repeated) runs next to the
    uncapped reference (left), and final loss against epochs with the data-constrained law (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    runs = sorted(result["runs"], key=lambda r: r["epochs"])
    colors = sequential_colors([r["epochs"] for r in runs], "plasma", top=0.85)  # colour: epochs
    facts = FigureFacts("repetition", objective)
    for run in runs:
        tokens, loss = learning_curve(curves[run["run"]])
        color = colors[run["epochs"]]
        style = "-" if run["capped"] else "--"
        data = "+".join(run.get("sources") or []) or "all sources"
        what = (
            f"{data}, U = D/{run['epochs']:.3g}"
            if run["capped"]
            else f"reference: {data}, {run['epochs']:.2f} epochs"
        )
        left.plot(tokens, loss, style, color=color, lw=1.2, label=f"{run['run'].split('/')[-1]}: {what}")
    style_axes(
        left, xlabel="training tokens D", ylabel="validation loss (nats/token)", logy=False, fontsize=7,
        title=f"{TITLES[objective]}: repeated (solid) vs uncapped reference (dashed)",
    )  # fmt: skip
    left.title.set_fontsize(9)
    epochs = np.array([r["epochs"] for r in runs])
    loss = np.array([r["val_loss"] for r in runs])
    right.plot(epochs, loss, "o", color="black", label="final validation loss")
    law = result.get("law")
    if law:
        ci = (result.get("interval") or {}).get("r_star_d")
        span = f" [{ci['lo']:.3g}, {ci['hi']:.3g}]" if ci else ""
        right.plot(epochs, [r["predicted_val_loss"] for r in runs], "x", ms=9, color="tab:red",
                   label=f"data-constrained law, R_D* = {law['r_star_d']:.3g}{span}")  # fmt: skip
        facts.laws.append({**law_record("data_constrained", "r_star_d"), "drawn": True,
                           "exponent_ci": [ci["lo"], ci["hi"]] if ci else None})  # fmt: skip
        if ci:
            facts.intervals.append("R_D*: 95% bootstrap interval in brackets (legend)")
        if law.get("at_bound"):
            note = "R_D* at a search bound: not identified by these runs"
            right.text(0.02, 0.04, note, transform=right.transAxes, fontsize=7, color="tab:red")
    else:
        right.plot([], [], " ", label=f"law not fitted: {result.get('skipped_reason', '')[:70]}")
        facts.laws.append(law_record("data_constrained", "r_star_d", reason=result.get("skipped_reason")))
    if result.get("caveat"):
        right.text(0.02, 0.96, result["caveat"][:110], transform=right.transAxes, fontsize=6, va="top")
    style_axes(
        right, xlabel="epochs over the run's unique tokens", ylabel="final validation loss", logy=False,
        fontsize=7, title="Muennighoff et al. (2023): D' = U + U R_D* (1 - e^(-R_D/R_D*)), markers: law",
    )  # fmt: skip
    right.title.set_fontsize(9)
    fig.tight_layout()
    if result.get("caveat"):
        facts.notes.append(result["caveat"])
    attach_facts(fig, facts)
    return fig


def transfer_points_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {"objective": pl.Utf8, "size": pl.Utf8, "n_params": pl.Float64, "finetune_tokens": pl.Float64,
              "transferred_tokens": pl.Float64, "status": pl.Utf8}  # fmt: skip
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
