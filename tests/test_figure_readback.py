"""Every figure read back from its matplotlib objects (Agg), on hand-made inputs: where the IsoFLOP minima
are and in which colour, when the hollow "extrapolated vertex" marker appears, that bands and error bars
are drawn for intervals, that legends list exactly the labelled artists, that log-axis tick labels are
plain, that colours follow the study's budgets, and what each figure's facts JSON says."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_hex
from plmscale import downstream_plots as dp
from plmscale import paper_plots as pp
from plmscale.figure_style import FigureFacts, budget_colors, facts_of, flops_label, si_number
from plmscale.fits import approach2
from plmscale.paper import extrapolation_table
from plmscale.plots import (
    VERTEX_INSIDE_LABEL,
    VERTEX_OUTSIDE_LABEL,
    draw_law,
    isoflop_figure,
    learning_curves_figure,
    loss_compute_figure,
    save_figure,
    style_axes,
)

BUDGETS = [1e10, 3e10, 1e11]
SIZES = [1e4, 2e4, 5e4, 1e5, 2e5]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def labelled_artists(ax) -> list[str]:
    """Labels of the artists a legend would list, in drawing order (matplotlib's own rule: no "_")."""
    _handles, labels = ax.get_legend_handles_labels()
    return labels


def tick_texts(fig) -> list[str]:
    fig.canvas.draw()
    return [
        t.get_text()
        for ax in fig.axes
        for axis in (ax.xaxis, ax.yaxis)
        for t in axis.get_ticklabels(which="both")
        if t.get_text()
    ]


def stars(ax) -> list:
    return [ln for ln in ax.get_lines() if ln.get_marker() == "*"]


# -------------------------------------------------------------------------------------- the IsoFLOP fixture
@pytest.fixture(scope="module")
def study():
    """Three budgets on sizes 10k..200k: 1e10 has its vertex at N = 50k (inside), 3e10 at N = 1M (outside,
    beyond 200k), 1e11 is concave (no minimum). Losses are exact parabolas in ln N, so Approach 2's vertex
    is the hand-written one."""
    u = np.log(SIZES)
    losses = {
        1e10: 0.01 * (u - math.log(5e4)) ** 2 + 3.0,
        3e10: 0.005 * (u - math.log(1e6)) ** 2 + 2.5,
        1e11: -0.01 * (u - math.log(5e4)) ** 2 + 2.4,
    }
    runs = pl.DataFrame(
        {
            "flops_budget": [b for b in BUDGETS for _ in SIZES],
            "n_params": SIZES * len(BUDGETS),
            "val_loss": np.concatenate([losses[b] for b in BUDGETS]),
        }
    )
    a2 = approach2(runs["flops_budget"], runs["n_params"], runs["val_loss"])
    fit = {"objective": "clm", "budgets": BUDGETS, "approach2": a2.to_dict()}
    curves = pl.DataFrame(
        {
            "run": [f"r{b:g}" for b in BUDGETS for _ in range(3)],
            "flops": [b * f for b in BUDGETS for f in (0.25, 0.5, 1.0)],
            "num_tokens": [b / 6e4 * f for b in BUDGETS for f in (0.25, 0.5, 1.0)],
            "val_loss": [3.5, 3.2, 3.0] * len(BUDGETS),
            "n_params": [5e4] * 9,
            "flops_budget": [b for b in BUDGETS for _ in range(3)],
        }
    )
    return runs, curves, fit


def test_isoflop_minima_inside_the_sampled_sizes_in_the_budget_colour(study):
    runs, _, fit = study
    fig = isoflop_figure(runs, fit, "clm")
    (ax,) = fig.axes
    colors = budget_colors(BUDGETS)
    filled = [ln for ln in stars(ax) if ln.get_markerfacecolor() != "none"]
    hollow = [ln for ln in stars(ax) if ln.get_markerfacecolor() == "none"]
    # 1e10: a filled star at the vertex N = 50k, loss 3.0, in the 1e10 colour, inside 10k..200k
    (star,) = filled
    assert star.get_xdata()[0] == pytest.approx(5e4, rel=1e-9) and star.get_ydata()[0] == pytest.approx(3.0)
    assert SIZES[0] <= star.get_xdata()[0] <= SIZES[-1]
    assert to_hex(star.get_markerfacecolor()) == colors[1e10]
    # 3e10: the vertex (N = 1M) is beyond 200k, so a hollow star on the parabola at N = 200k
    (edge,) = hollow
    assert edge.get_xdata()[0] == SIZES[-1]
    assert edge.get_ydata()[0] == pytest.approx(0.005 * math.log(2e5 / 1e6) ** 2 + 2.5)
    assert to_hex(edge.get_markeredgecolor()) == colors[3e10]
    assert [t.get_text() for t in ax.texts] == ["vertex N=1M"]
    # legend == the labelled artists, once each; the entries name both kinds of marker and the concave one
    texts = legend_texts(ax)
    assert texts == labelled_artists(ax) and len(set(texts)) == len(texts)
    assert VERTEX_INSIDE_LABEL in texts and VERTEX_OUTSIDE_LABEL in texts
    assert "C = 1.0e+11 FLOPs — no minimum (concave)" in texts
    assert ax.get_legend().get_title().get_text() == ""  # no "★ N_opt" promise
    facts = facts_of(fig)
    assert facts.extrapolated == [3e10] and facts.no_minimum == [
        {"budget": 1e11, "reason": "no minimum (concave)"}
    ]
    assert [v["extrapolated"] for v in facts.vertices] == [False, True]
    assert facts.budget_colors == {"1e+10": colors[1e10], "3e+10": colors[3e10], "1e+11": colors[1e11]}
    assert facts.legend == [texts]
    plt.close(fig)


def test_no_hollow_marker_when_every_vertex_is_inside(study):
    runs, _, fit = study
    inside = runs.filter(pl.col("flops_budget") == 1e10)
    fig = isoflop_figure(inside, fit, "clm")
    (ax,) = fig.axes
    assert [ln.get_markerfacecolor() == "none" for ln in stars(ax)] == [False]
    assert VERTEX_OUTSIDE_LABEL not in legend_texts(ax) and not ax.texts
    # one budget drawn, but its colour is the one it has in the full study (3 budgets), not a lone colour
    assert to_hex(stars(ax)[0].get_markerfacecolor()) == budget_colors(BUDGETS)[1e10]
    assert facts_of(fig).extrapolated == []
    plt.close(fig)


def test_one_budget_one_colour_in_every_figure(study):
    runs, curves, fit = study
    colors = budget_colors(BUDGETS)
    iso = isoflop_figure(runs, fit, "clm")
    points = {
        ln.get_label().split(" —")[0]: to_hex(ln.get_color())
        for ln in iso.axes[0].get_lines()
        if ln.get_marker() == "o"
    }
    assert points == {f"C = {b:.1e} FLOPs": colors[b] for b in BUDGETS}
    loss = loss_compute_figure(curves, fit, "clm")
    drawn = {to_hex(ln.get_color()) for ln in loss.axes[0].get_lines() if ln.get_linestyle() == "-"}
    assert set(colors.values()) <= drawn
    lc = learning_curves_figure(curves.filter(pl.col("flops_budget") > 1e10), "clm", budgets_all=BUDGETS)
    assert [to_hex(ax.title.get_color()) for ax in lc.axes] == [colors[3e10], colors[1e11]]
    for fig in (iso, loss, lc):
        plt.close(fig)


# ------------------------------------------------------------------------------------------- tick labels
def test_plain_numbers_and_flops_labels():
    assert [si_number(v) for v in (2.6, 300, 14_000, 999_999, 1.7e9, 0.05)] == [
        "2.6",
        "300",
        "14k",
        "1M",
        "1.7B",
        "0.05",
    ]
    assert [flops_label(v) for v in (1e18, 3e18)] == ["$10^{18}$", "3e18"]


@pytest.mark.parametrize(
    ("x", "y", "xlabels", "ylabels"),
    [
        ((1e17, 1e22), (2.0, 2.9), ["$10^{18}$", "$10^{20}$"], ["2", "2.5", "2.9"]),
        ((3e10, 3e11), (1e4, 3e5), ["3e10", "$10^{11}$", "2e11"], ["10k", "100k"]),
        ((2.2, 3.1), (0.5, 50), ["2.5", "3"], ["1", "10"]),
    ],
)
def test_log_tick_labels_are_plain(x, y, xlabels, ylabels):
    fig, ax = plt.subplots()
    ax.plot(x, y, label="line")
    style_axes(ax, xlabel="training compute C (FLOPs)", ylabel="N", logy=True)
    ax.set_xlim(*x)
    ax.set_ylim(*y)
    texts = tick_texts(fig)
    assert not any("times" in t or "×" in t for t in texts)
    got_x = [t.get_text() for t in ax.xaxis.get_ticklabels(which="both") if t.get_text()]
    got_y = [t.get_text() for t in ax.yaxis.get_ticklabels(which="both") if t.get_text()]
    assert set(xlabels) <= set(got_x) and set(ylabels) <= set(got_y)
    assert not any("10^" in t or "e" in t for t in got_y)  # counts and losses: 2.5, 14k, never powers
    plt.close(fig)


# ------------------------------------------------------------------------------------------ bands and bars
def test_a_law_with_an_interval_gets_a_band_and_one_without_none():
    c = np.geomspace(1e18, 1e20, 5)
    law = {"coefficient": 1e-3, "exponent": 0.5}
    band = {"flops": list(c), "lo": list(0.9e-3 * c**0.5), "hi": list(1.1e-3 * c**0.5)}
    for bands, expect in ((band, 1), (None, 0)):
        fit = {"approach2": {"n_opt": law, "d_opt": law}}
        if bands:
            fit["approach2_bands"] = {"n_opt": bands}
        facts = FigureFacts("t")
        fig, ax = plt.subplots()
        draw_law(ax, fit, "approach2", "n_opt", c, "tab:orange", facts)
        polys = [p for p in ax.collections if isinstance(p, PolyCollection)]
        assert len(polys) == expect
        assert facts.laws[0]["drawn"] and facts.laws[0]["band"] == bool(expect)
        if expect:  # the band's lower edge at c[0] is the given lo
            ys = sorted(v[1] for v in polys[0].get_paths()[0].vertices if math.isclose(v[0], c[0]))
            assert ys[0] == pytest.approx(0.9e-3 * c[0] ** 0.5)
        plt.close(fig)


def _downstream(lo, hi):
    row = {
        "model": "a",
        "kind": "own",
        "objective": "mlm",
        "dataset": "proxy",
        "method": "frozen",
        "pretrain_flops": 1e11,
        "n_params": 20_000,
        "test_accuracy": 0.70,
        "test_accuracy_lo": lo,
        "test_accuracy_hi": hi,
        "test_mcc": 0.3,
        "test_mcc_lo": None,
        "test_mcc_hi": None,
        "majority_accuracy": 0.6,
        "best_epoch": 1,
        "n_train": 100,
        "n_valid": 20,
        "n_test": 281,
    }
    rows = [row, {**row, "model": "b", "n_params": 10_000, "test_accuracy": 0.74}]
    return pl.DataFrame(rows, schema=dp.RESULTS_SCHEMA)


def test_downstream_error_bars_wilson_when_missing_and_models_spread_apart():
    lo, hi = dp.wilson_interval(0.70, 281)  # by hand: centre 0.70683, half-width 0.05328, / 1.01367
    assert (lo, hi) == pytest.approx((0.64402, 0.75059), abs=1e-5)
    fig = dp.downstream_compute_fig(_downstream(None, None))
    ax = fig.axes[0]
    (bars,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = sorted((s[:, 0].mean(), s[0, 1], s[1, 1]) for s in bars.get_segments())
    # model b (10k params) left of model a (20k), each within 10^+-0.0125 of the budget; a's bar = Wilson
    (xb, *_), (xa, ya_lo, ya_hi) = segments
    assert xb < 1e11 < xa and xa / xb == pytest.approx(10**dp.DODGE_DECADES)
    assert (ya_lo, ya_hi) == pytest.approx((lo, hi))
    assert "Wilson 95% interval" in fig._suptitle.get_text()
    assert facts_of(fig).intervals == ["error bars: Wilson 95% interval from n test proteins"]
    assert legend_texts(ax) == labelled_artists(ax)
    plt.close(fig)
    given = dp.downstream_compute_fig(_downstream(0.61, 0.79))
    assert "bootstrap 95% interval" in given._suptitle.get_text()
    plt.close(given)


# -------------------------------------------------------------------------------------- paper figures
def test_mask_ratio_curves_reuse_no_colour_and_list_sizes_once():
    rows = [
        {"size": size, "mask_ratio": r, "step": s, "loss": 2.5 + r - s / 1e5}
        for size in ("85M", "154M")
        for r in (0.1, 0.15, 0.3)
        for s in (100, 200, 300, 400, 500, 600)
    ]
    fig = pp.mask_ratio(pl.DataFrame(rows))
    curves = fig.axes[1]
    styles = [(to_hex(ln.get_color()), ln.get_linestyle()) for ln in curves.get_lines()]
    assert len(styles) == 6 and len(set(styles)) == 6
    assert len({c for c, _ in styles}) == 3  # one colour per mask ratio, shared by the two sizes
    assert legend_texts(curves) == labelled_artists(curves) == ["N = 154M", "N = 85M"]
    assert len(fig.axes) == 3 and fig.axes[2].get_ylabel() == "mask ratio"  # the colour bar
    plt.close(fig)


def test_transfer_sizes_keep_their_colour_across_panels():
    rows = []
    for objective, sizes in (("clm", ("150M", "1B")), ("mlm", ("1B", "3B"))):
        for size in sizes:
            for pretrained in (True, False):
                for step in (1e8, 1e9):
                    rows.append(
                        {
                            "kind": "tokens",
                            "metric": "valid_loss",
                            "objective": objective,
                            "size": size,
                            "pretrained": pretrained,
                            "step": step,
                            "value": 2.5,
                        }
                    )
    fig = pp.transfer(pl.DataFrame(rows))
    colour_of = [
        {ln.get_label().lstrip("_"): to_hex(ln.get_color()) for ln in ax.get_lines()} for ax in fig.axes
    ]
    assert colour_of[0]["N = 1B"] == colour_of[1]["N = 1B"]
    assert len({*colour_of[0].values(), *colour_of[1].values()}) == 3
    for ax in fig.axes:
        assert legend_texts(ax) == labelled_artists(ax) and len(legend_texts(ax)) == 2
    assert not any("×" in t or "times" in t for t in tick_texts(fig))
    plt.close(fig)


# ---------------------------------------------------------------------------------------- written files
def test_save_figure_writes_the_facts_next_to_the_png(study, tmp_path):
    runs, _, fit = study
    fig = isoflop_figure(runs, fit, "clm")
    save_figure(fig, str(tmp_path / "clm_isoflop.png"), str(tmp_path / "clm_isoflop.svg"), 30)
    data = json.loads((tmp_path / "clm_isoflop.json").read_text())
    assert FigureFacts.from_dict(data).extrapolated == [3e10]
    assert data["laws"][0]["method"] == "approach2" and data["laws"][0]["drawn"] is False
    assert not list(tmp_path.glob(".*"))  # no temp file left behind
    with pytest.raises(ValueError, match="unknown keys"):
        FigureFacts.from_dict({**data, "stars": []})


def test_extrapolation_csv_numeric_columns_hold_numbers(tmp_path):
    held = {
        "budget": 1e21,
        "predicted_n_opt": 2e9,
        "observed_n_opt": None,
        "n_opt_ratio": None,
        "predicted_loss": 2.2,
        "loss_reference": "observed_min_loss",
        "observed_min_loss": 2.0,
        "loss_relative_error": 0.1,
        "observed_skipped_reason": "only 1 distinct model size(s)",
    }
    parabola = {
        **held,
        "budget": 3e21,
        "observed_n_opt": 1e9,
        "n_opt_ratio": 2.0,
        "observed_skipped_reason": None,
        "loss_reference": "observed_parabola_loss",
        "observed_parabola_loss": 2.1,
    }
    ext = {"approach3": {"cutoff_flops": 1e20, "held_out": [held, parabola]}}
    (tmp_path / "fit.json").write_text(json.dumps({"objective": "clm", "extrapolation": ext}))
    extrapolation_table([str(tmp_path / "fit.json")], str(tmp_path / "ext.csv"))
    table = pl.read_csv(tmp_path / "ext.csv")  # types inferred from the text, as a reader would
    for col in (
        "cutoff_flops",
        "held_out_budget",
        "predicted_n_opt",
        "observed_n_opt",
        "n_opt_error_pct",
        "predicted_loss",
        "observed_loss",
        "loss_error_pct",
    ):
        assert table[col].dtype == pl.Float64, col
    assert table["observed_loss"].to_list() == [2.0, 2.1]
    assert table["n_opt_error_pct"].to_list() == [None, pytest.approx(100.0)]
    row = table.row(0, named=True)
    assert row["observed_loss"] == 2.0 and row["observed_n_opt"] is None
    assert row["loss_error_pct"] == pytest.approx(10.0)
    assert row["loss_reference"] == "observed_min_loss" and row["note"] == "only 1 distinct model size(s)"


def _repetition_inputs(tmp_path, with_law: bool):
    curves, runs = {}, []
    for name, epochs, capped in (("ref", 0.5, False), ("x4", 4.0, True), ("x16", 16.0, True)):
        path = tmp_path / f"{name}.parquet"
        pl.DataFrame(
            {"num_tokens": [1e4, 2e4, 4e4], "val_loss": [3.0, 2.9, 2.8 + epochs / 100]}
        ).write_parquet(path)
        curves[name] = str(path)
        runs.append(
            {
                "run": name,
                "epochs": epochs,
                "capped": capped,
                "val_loss": 2.8 + epochs / 100,
                "predicted_val_loss": 2.8 + epochs / 110,
            }
        )
    result = {"runs": runs, "skipped_reason": "fewer than 2 repeated runs"}
    if with_law:
        result = {
            "runs": runs,
            "law": {"r_star_d": 15.0, "at_bound": False},
            "interval": {"r_star_d": {"lo": 9.0, "median": 15.0, "hi": 30.0}},
        }
    return result, curves


@pytest.mark.parametrize("with_law", [True, False])
def test_repetition_figure_states_its_law_and_interval(tmp_path, with_law):
    from plmscale.law_plots import repetition_figure

    result, curves = _repetition_inputs(tmp_path, with_law)
    fig = repetition_figure(result, curves, "mlm")
    for ax in fig.axes:
        assert legend_texts(ax) == labelled_artists(ax)
    (law,) = facts_of(fig).laws
    assert law["drawn"] is with_law
    if with_law:
        assert law["exponent_ci"] == [9.0, 30.0]
        assert "data-constrained law, R_D* = 15 [9, 30]" in legend_texts(fig.axes[1])
    else:
        assert law["reason"] == "fewer than 2 repeated runs"
    colours = [to_hex(ln.get_color()) for ln in fig.axes[0].get_lines()]
    assert len(set(colours)) == 3  # one colour per epochs value
    plt.close(fig)


def test_transfer_law_figure_names_an_unfitted_objective():
    points = pl.DataFrame(
        {
            "objective": ["mlm"] * 4,
            "size": ["25M", "25M", "85M", "85M"],
            "n_params": [2.5e7, 2.5e7, 8.5e7, 8.5e7],
            "finetune_tokens": [1e8, 1e9, 1e8, 1e9],
            "transferred_tokens": [5e8, 2e9, 8e8, 3e9],
            "status": ["ok"] * 4,
        }
    )
    law = {
        "clm": {"sizes": [], "skipped_reason": "no transfer runs evaluated on clm"},
        "mlm": {
            "sizes": ["25M", "85M"],
            "law": {"k": 1e3, "alpha": 0.2, "beta": 0.5},
            "leave_one_size_out": {"alpha": [0.1, 0.3]},
        },
    }
    fig = pp.transfer_law(law, points)
    laws = {entry["method"]: entry for entry in facts_of(fig).laws}
    assert laws["clm"]["drawn"] is False and laws["clm"]["reason"] == "no transfer runs evaluated on clm"
    assert laws["mlm"]["drawn"] is True
    assert "not fitted (no transfer runs evaluated on clm)" in fig.axes[0].get_title()
    mlm = fig.axes[1]
    assert legend_texts(mlm) == labelled_artists(mlm) == ["25M", "85M"]
    assert not any("×" in t or "times" in t for t in tick_texts(fig))
    plt.close(fig)
