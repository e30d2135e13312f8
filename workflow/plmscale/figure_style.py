"""What every figure of the study shares: plain tick labels on log axes, one colour per compute budget
(or per any other ordered value) across all panels and figures, and the :class:`FigureFacts` record of what
a figure drew, written next to it as ``<figure>.json``.

Tick labels (:func:`plain_log_ticks`): counts read ``2.6``, ``300``, ``14k``, ``1.2M``, ``1.7B``, ``2T``
(k = 10^3, M = 10^6, B = 10^9, T = 10^12, the model-size convention of the paper); an axis whose label
names FLOPs reads ``10^18`` at decades and ``3e18`` between them. Never ``2.6×10⁰``.

Colours (:func:`sequential_colors`, :func:`budget_colors`): a value's colour comes from its rank in the
*full* list of values of the study (``fit["budgets"]``), never from the values one panel happens to show.

``<figure>.json`` (:class:`FigureFacts`, written by :func:`plmscale.plots.save_figure` next to the PNG),
keys:

* ``figure`` -- the figure's name (``isoflop``, ``optimal_allocation``, ``loss_vs_compute``, ...);
* ``objective`` -- ``clm``, ``mlm``, ``both`` or ``""``;
* ``title`` -- the figure's title (suptitle, else the first panel's title);
* ``budgets`` -- the compute budgets drawn (FLOPs, ascending);
* ``budget_colors`` -- budget (as ``"%g"`` text) -> ``#rrggbb``, the same in every figure of a study;
* ``vertices`` -- per budget with a parabola minimum: ``budget``, ``n_opt``, ``loss_opt``,
  ``sampled_n_min``, ``sampled_n_max``, ``extrapolated`` (vertex outside the sampled sizes), ``drawn_n``,
  ``drawn_loss`` (where the marker is: the vertex, or the parabola at the nearest sampled size),
  ``raw_min_at_edge`` (the vertex is inside but the lowest raw loss is at the smallest or largest size),
  ``at_edge`` (the fit's flag: extrapolated or raw minimum at the edge), ``excluded_from_law`` (at the
  edge and the fit excludes edge budgets from N_opt(C));
* ``extrapolated`` -- the budgets whose vertex is extrapolated (a subset of ``budgets``);
* ``no_minimum`` -- ``[{"budget", "reason"}]``, budgets drawn without a minimum;
* ``laws`` -- ``[{"method", "law", "drawn", "band", "reason", "exponent_ci"}]``: each law the figure
  considered, whether its line and its 95% band were drawn, and why not (``reason``);
* ``intervals`` -- plain-text descriptions of every band or error bar drawn;
* ``legend`` -- the legend entries, panel by panel, exactly as drawn;
* ``notes`` -- anything else a caption should say.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.colors import to_hex
from matplotlib.ticker import LogFormatter

from plmscale.atomic import write_json_atomic

COUNT_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def si_number(value: float) -> str:
    """``2.6 -> "2.6"``, ``14000 -> "14k"``, ``1.2e6 -> "1.2M"``, ``1.7e9 -> "1.7B"``, ``0.05 -> "0.05"``
    (3 significant digits; from 10^15 on ``"2e+16"``)."""
    magnitude = abs(value)
    if value == 0 or not math.isfinite(value) or magnitude >= 999.5e12:
        return f"{value:.3g}"
    for scale, suffix in COUNT_SUFFIXES:
        if magnitude >= scale * 0.9995:  # 999_999 -> "1M", not "1e+03k"
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def flops_label(value: float) -> str:
    """``1e18 -> "$10^{18}$"``; ``3e18 -> "3e18"`` (a FLOPs axis spans orders of magnitude); values from
    0.01 to 1000 as :func:`si_number`."""
    if value <= 0 or not math.isfinite(value) or 0.01 <= value < 1000:
        return si_number(value)  # a small axis (a test, a toy run) reads plain
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = value / 10.0**exponent
    if math.isclose(mantissa, 1.0, rel_tol=1e-6):
        return f"$10^{{{exponent}}}$"
    return f"{mantissa:.2g}e{exponent}"


class PlainLogFormatter(LogFormatter):
    """matplotlib's log formatter (it decides which ticks get a label: decades only when the axis spans
    more than one decade, a few minor ticks otherwise) writing :func:`si_number` or :func:`flops_label`."""

    def __init__(self, *, flops: bool = False) -> None:
        super().__init__(base=10.0, labelOnlyBase=False)
        self.flops = flops

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return flops_label(x) if self.flops else si_number(x)


def plain_log_ticks(ax, axis: str = "both", *, flops: bool | None = None) -> None:
    """Give every log-scaled axis of ``ax`` (``axis``: "x", "y" or "both") plain tick labels. ``flops``
    None: an axis whose label contains "FLOPs" gets FLOPs labels. Call after the scale is set."""
    for name in ("x", "y") if axis == "both" else (axis,):
        target = ax.xaxis if name == "x" else ax.yaxis
        if target.get_scale() != "log":
            continue
        is_flops = "FLOPs" in target.get_label_text() if flops is None else flops
        target.set_major_formatter(PlainLogFormatter(flops=is_flops))
        target.set_minor_formatter(PlainLogFormatter(flops=is_flops))


def sequential_colors(values, cmap: str = "viridis", top: float = 0.9) -> dict[Any, str]:
    """Each distinct value -> a hex colour of ``cmap`` by its rank among all ``values`` (the full list of
    the study, so a value keeps its colour in every panel); ``top`` < 1 avoids the palest end."""
    ordered = sorted(set(values))
    colormap = plt.get_cmap(cmap)
    return {v: to_hex(colormap(i / max(1, len(ordered) - 1) * top)) for i, v in enumerate(ordered)}


def budget_colors(budgets) -> dict[float, str]:
    """Budget (FLOPs) -> colour; pass every budget of the study (``fit["budgets"]``), not a panel's."""
    return sequential_colors([float(b) for b in budgets], "viridis")


@dataclass
class FigureFacts:
    """What one figure drew (see the module docstring for the keys of its JSON form)."""

    figure: str
    objective: str = ""
    title: str = ""
    budgets: list[float] = field(default_factory=list)
    budget_colors: dict[str, str] = field(default_factory=dict)
    vertices: list[dict[str, Any]] = field(default_factory=list)
    extrapolated: list[float] = field(default_factory=list)
    no_minimum: list[dict[str, Any]] = field(default_factory=list)
    laws: list[dict[str, Any]] = field(default_factory=list)
    intervals: list[str] = field(default_factory=list)
    legend: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FigureFacts:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"figure facts: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)


def attach_facts(fig, facts: FigureFacts) -> FigureFacts:
    """Store ``facts`` on ``fig`` (read back by :func:`facts_of`); fills ``title`` and ``legend`` from what
    the figure holds now, so call it once the figure is finished."""
    if not facts.title:
        suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
        facts.title = suptitle or next((ax.get_title() for ax in fig.axes if ax.get_title()), "")
    facts.legend = [
        [t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes if ax.get_legend() is not None
    ]
    fig.plmscale_facts = facts
    return facts


def facts_of(fig) -> FigureFacts | None:
    return getattr(fig, "plmscale_facts", None)


def law_record(method: str, law: str, *, reason: str | None = None) -> dict[str, Any]:
    """A ``laws`` entry of :class:`FigureFacts`: not drawn (``reason`` says why) until updated."""
    return {
        "method": method,
        "law": law,
        "drawn": False,
        "band": False,
        "reason": reason,
        "exponent_ci": None,
    }


def dedupe_labels(ax) -> None:
    """Keep a label on the first line that carries it only (one legend entry per kind of marker)."""
    seen: set[str] = set()
    for line in ax.get_lines():
        label = line.get_label()
        if label in seen:
            line.set_label(f"_{label}")
        seen.add(label)


def neutral_legend_handles(ax, labels, color: str = "0.35") -> None:
    """Legend entries that stand for every budget (``labels``) shown in grey, not the first budget's colour
    (only the legend's copies of the handles change; the drawn markers keep their colours)."""
    legend = ax.get_legend()
    if legend is None:
        return
    for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True):
        if text.get_text() in labels:
            if handle.get_markerfacecolor() not in ("none", (0.0, 0.0, 0.0, 0.0)):
                handle.set_markerfacecolor(color)
            handle.set_markeredgecolor(color)


def write_facts(path: str | Path, facts: FigureFacts) -> None:
    """``facts`` as JSON at ``path`` (atomically)."""
    write_json_atomic(path, json.loads(json.dumps(facts.to_dict(), default=float)))


# ------------------------------------------------------------------------------------ IsoFLOP minima
VERTEX_INSIDE_LABEL = "parabola minimum N_opt (inside the sampled N)"
VERTEX_OUTSIDE_LABEL = (
    "extrapolated vertex (outside the sampled N):\ndrawn at the nearest sampled N, arrow points to it"
)


def study_budgets(runs: pl.DataFrame, fit: dict[str, Any], column: str = "flops_budget") -> list[float]:
    """Every budget of the study: the fit's list and the runs' (so colours agree across figures)."""
    values = set(fit.get("budgets") or [])
    if column in runs.columns:
        values |= set(runs[column].drop_nulls().to_list())
    return sorted(float(v) for v in values)


def draw_vertex(ax, info: dict[str, Any], n_sampled: np.ndarray, color: str) -> dict[str, Any]:
    """One budget's parabola minimum: a filled star at the vertex when it lies inside the sampled sizes,
    else a hollow star on the parabola at the nearest sampled size with an arrow towards the vertex."""
    c2, c1, c0 = info["coefficients"]
    n_min, n_max, n_opt = float(n_sampled.min()), float(n_sampled.max()), float(info["n_opt"])
    inside = n_min <= n_opt <= n_max
    if inside:
        x, y = n_opt, float(info["loss_opt"])
        ax.plot(x, y, "*", ms=14, color=color, mec="black", mew=0.6, zorder=5, label=VERTEX_INSIDE_LABEL)
    else:
        x = n_min if n_opt < n_min else n_max
        y = float(c2 * np.log(x) ** 2 + c1 * np.log(x) + c0)
        ax.plot(x, y, "*", ms=14, mfc="none", mec=color, mew=1.4, zorder=5, label=VERTEX_OUTSIDE_LABEL)
        left = n_opt < n_min
        ax.annotate(f"vertex N={si_number(n_opt)}", xy=(x, y), xytext=(-30 if left else 30, -9),
                    textcoords="offset points", ha="right" if left else "left", va="center", fontsize=6,
                    color="0.2", arrowprops={"arrowstyle": "<-", "color": color, "lw": 1.2})  # fmt: skip
    return {
        "budget": float(info["budget"]), "n_opt": n_opt, "loss_opt": float(info["loss_opt"]),
        "sampled_n_min": n_min, "sampled_n_max": n_max, "extrapolated": not inside,
        "drawn_n": float(x), "drawn_loss": y, "raw_min_at_edge": bool(info.get("at_edge")) and inside,
        "at_edge": bool(info.get("at_edge")),
    }  # fmt: skip
