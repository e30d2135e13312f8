"""Bootstrap intervals of the study's own fits (plmscale.fitting) and how the figures show them
(plmscale.plots): synthetic runs from a known L(N, D), checked against closed forms and percentiles
computed here from the stored draws; unfitted or non-converged laws must not be drawn."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from matplotlib.collections import PolyCollection
from plmscale import fits, plots
from plmscale.fits import Approach3Grid
from plmscale.fitting import (
    exponent_interval,
    exponents,
    fit_tables,
    law_samples,
    law_status,
    own_extrapolation,
)
from plmscale.plots import loss_compute_figure, optimal_figure, plot_objective

# Hoffmann et al. 2022 Approach 3 coefficients as the true law (as in tests/test_fits.py)
E0, A0, B0, ALPHA0, BETA0 = 1.69, 406.4, 410.7, 0.34, 0.28
A_EXP0 = BETA0 / (ALPHA0 + BETA0)  # N_opt ∝ C^a, a = beta/(alpha+beta) = 0.4516
N_BOOT = 40


def law(n, d):
    return E0 + A0 * np.power(n, -ALPHA0) + B0 * np.power(d, -BETA0)


def n_opt_true(c):
    """Hoffmann eq. (4), written out here: N_opt = G (C/6)^a, G = (alpha A / (beta B))^(1/(alpha+beta))."""
    g = (ALPHA0 * A0 / (BETA0 * B0)) ** (1 / (ALPHA0 + BETA0))
    return g * (c / 6) ** A_EXP0


def synthetic_study(seed: int = 7, noise: float = 0.003):
    """IsoFLOP runs at 5 budgets x 7 sizes (N_opt(C) x 1/8 ... 8) with 0.3% log-normal loss noise, and
    each run's learning curve (10 points up to its final tokens), as the fit stage's run/curve tables."""
    rng = np.random.default_rng(seed)
    runs, curves = [], []
    for budget in np.geomspace(1e18, 1e21, 5):
        for i, n in enumerate(n_opt_true(budget) * np.geomspace(1 / 8, 8, 7)):
            d = budget / (6 * n)
            name = f"c{budget:.0e}_n{i}"
            tokens = np.geomspace(d / 30, d, 10)
            loss = law(n, tokens) * np.exp(noise * rng.standard_normal(len(tokens)))
            runs.append(
                {"run": name, "flops_budget": budget, "n_params": n, "num_tokens": d, "val_loss": loss[-1]}
            )
            curves += [
                {
                    "run": name,
                    "flops_budget": budget,
                    "flops": 6 * n * t,
                    "n_params": n,
                    "num_tokens": t,
                    "val_loss": v,
                }
                for t, v in zip(tokens, loss, strict=True)
            ]
    return pl.DataFrame(runs), pl.DataFrame(curves)


@pytest.fixture(scope="module")
def synthetic_fit():
    runs, curves = synthetic_study()
    return fit_tables(runs, curves, approach1_bins=10, approach2_exclude_edge=True, approach3_grid="small",
                      huber_delta=1e-3, n_bootstrap=N_BOOT, seed=3)  # fmt: skip


def test_bootstrap_intervals_contain_the_true_exponents(synthetic_fit):
    fit = synthetic_fit
    assert json.loads(json.dumps(fit, allow_nan=False)) == fit  # plain JSON
    boot2 = fit["approach2_bootstrap"]
    assert boot2["method"] == "approach2_bootstrap" and boot2["n_resamples"] == N_BOOT
    assert boot2["resample_unit"] == "run within budget"
    # the interval, recomputed here from the stored per-resample draws
    draws = np.array(boot2["samples"]["n_opt_exponent"])
    lo, hi = np.percentile(draws, [2.5, 97.5])
    assert exponent_interval(boot2, "n_opt") == pytest.approx((lo, hi))
    assert lo < A_EXP0 < hi and hi - lo > 1e-3
    assert lo <= fit["approach2"]["n_opt"]["exponent"] <= hi
    # Approach 3's bootstrap: a = beta/(alpha+beta) per draw
    boot3 = fit["approach3_bootstrap"]
    s = boot3["samples"]
    a_draws = np.array(s["beta"]) / (np.array(s["alpha"]) + np.array(s["beta"]))
    lo3, hi3 = np.percentile(a_draws, [2.5, 97.5])
    assert exponent_interval(boot3, "n_opt") == pytest.approx((lo3, hi3))
    assert lo3 < A_EXP0 < hi3 and hi3 > lo3
    # Approach 1 resamples whole learning curves and has a nonzero-width interval too
    lo1, hi1 = exponent_interval(fit["approach1_bootstrap"], "n_opt")
    assert fit["approach1_bootstrap"]["resample_unit"] == "run" and hi1 > lo1


def test_bands_are_pointwise_percentiles_of_the_draws(synthetic_fit):
    fit = synthetic_fit
    for method in ("approach1", "approach2", "approach3"):
        band = fit[f"{method}_bands"]["n_opt"]
        c = np.array(band["flops"])
        assert c.min() <= 1e18 / 2 * 1.0001 and c.max() >= 2e21 * 0.9999  # the compute range, padded 2x
        assert np.all(np.array(band["lo"]) <= np.array(band["median"]))
        assert np.all(np.array(band["median"]) <= np.array(band["hi"]))
    # Approach 2 at the largest budget, by hand from the stored draws
    s = fit["approach2_bootstrap"]["samples"]
    band = fit["approach2_bands"]["d_opt"]
    c = band["flops"][-1]
    values = [k * c**a for k, a in zip(s["d_opt_coefficient"], s["d_opt_exponent"], strict=True)]
    assert [band["lo"][-1], band["hi"][-1]] == pytest.approx(list(np.percentile(values, [2.5, 97.5])))
    # Approach 3's per-draw allocation laws are Hoffmann's closed form of each draw's A, B, alpha, beta
    s3 = fit["approach3_bootstrap"]["samples"]
    k, a = law_samples(fit["approach3_bootstrap"], "n_opt")[0]
    alpha, beta = s3["alpha"][0], s3["beta"][0]
    g = (alpha * s3["A"][0] / (beta * s3["B"][0])) ** (1 / (alpha + beta))
    assert a == pytest.approx(beta / (alpha + beta))
    assert k * 1e20**a == pytest.approx(g * (1e20 / 6) ** (beta / (alpha + beta)), rel=1e-9)


def test_exponents_carry_intervals_and_reasons(synthetic_fit):
    out = exponents(synthetic_fit)
    for method in ("approach1", "approach2", "approach3"):
        ci = out[method]["n_opt_exponent_ci"]
        assert ci == pytest.approx(list(exponent_interval(synthetic_fit[f"{method}_bootstrap"], "n_opt")))
        assert ci[0] <= out[method]["n_opt_exponent"] <= ci[1]
        assert out[method]["n_bootstrap"] == N_BOOT and "skipped" not in out[method]
    assert out["approach3"]["converged"] is synthetic_fit["approach3"]["best_converged"]
    lo, hi = out["approach3"]["alpha_ci"]
    assert lo < ALPHA0 < hi


def test_unsupported_bootstraps_are_recorded_with_reasons():
    """Two sizes per budget: no IsoFLOP parabola, so no Approach 2 law and no bootstrap of it; four runs:
    too few for Approach 3's five parameters, so neither the fit nor its bootstrap."""
    runs, curves = synthetic_study()
    keep = runs.filter(pl.col("run").str.ends_with("_n2") | pl.col("run").str.ends_with("_n4")).head(4)
    curves = curves.filter(pl.col("run").is_in(keep["run"].to_list()))
    fit = fit_tables(keep, curves, approach1_bins=10, approach2_exclude_edge=True, approach3_grid="small",
                     huber_delta=1e-3, n_bootstrap=5, seed=0)  # fmt: skip
    assert fit["approach2"]["n_opt"] is None and "usable budget" in fit["approach2"]["law_reason"]
    assert fit["approach2_bootstrap"] == {
        "method": "approach2_bootstrap",
        "skipped_reason": f"approach2 has no N_opt(C) law: {fit['approach2']['law_reason']}",
    }
    assert "needs >= 5 points" in fit["approach3"]["skipped_reason"]
    assert fit["approach3_bootstrap"]["skipped_reason"].startswith("approach3 not fitted: ")
    assert fit["approach2_bands"] == {} and fit["approach3_bands"] == {}
    out = exponents(fit)
    assert out["approach2"]["skipped"] == fit["approach2"]["law_reason"]
    assert out["approach2"]["bootstrap_skipped"] == fit["approach2_bootstrap"]["skipped_reason"]
    assert out["approach3"]["skipped"] == fit["approach3"]["skipped_reason"]
    # n_bootstrap below 2 cannot give percentiles: recorded, the point fits stay
    fit1 = fit_tables(keep, curves, approach1_bins=10, approach2_exclude_edge=True, approach3_grid="small",
                      huber_delta=1e-3, n_bootstrap=1, seed=0)  # fmt: skip
    assert "n_resamples" in fit1["approach1_bootstrap"]["skipped_reason"] and fit1["approach1"]["n_opt"]


def test_law_status():
    ok = {"n_opt": {"coefficient": 1.0, "exponent": 0.5}, "d_opt": {"coefficient": 1.0, "exponent": 0.5}}
    fit = {
        "approach1": {"method": "approach1", "skipped_reason": "only 1 envelope point(s)"},
        "approach2": {
            "method": "approach2",
            "n_opt": None,
            "d_opt": None,
            "law_reason": "0 usable budget(s)",
        },
        "approach3": {**ok, "best_converged": False, "best_message": "STOP: ITERATIONS REACHED LIMIT"},
    }
    assert law_status(fit, "approach1") == "only 1 envelope point(s)"
    assert law_status(fit, "approach2") == "0 usable budget(s)"
    assert law_status(fit, "approach3") == "did not converge (STOP: ITERATIONS REACHED LIMIT)"
    assert law_status({"approach3": {**ok, "best_converged": True}}, "approach3") is None
    assert law_status({"approach2": ok}, "approach2") is None


# ------------------------------------------------------------------------------------------ figures


@pytest.fixture(scope="module")
def unfitted_fit_result():
    """Approach 1 fitted with a bootstrap; Approach 2 without laws; Approach 3 with laws that did not
    converge (and a bootstrap, which must not be drawn either)."""
    runs, curves = synthetic_study()
    curve_points = {"run_id": curves["run"].to_numpy(), "flops": curves["flops"].to_numpy(),
                    "n_params": curves["n_params"].to_numpy(), "num_tokens": curves["num_tokens"].to_numpy(),
                    "loss": curves["val_loss"].to_numpy()}  # fmt: skip
    a1 = fits.approach1(curve_points, n_bins=10)
    boot1 = fits.approach1_bootstrap(curve_points, n_bins=10, n_resamples=20, seed=1)
    n, d, y = (runs[c].to_numpy() for c in ("n_params", "num_tokens", "val_loss"))
    a3 = fits.approach3(n, d, y, init_grid=fits.Approach3Grid.small())
    a3_dict = {
        **a3.to_dict(),
        "best_converged": False,
        "best_message": "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
    }
    a2_reason = "1 usable budget(s) of 5; power laws need >= 2 (edge budgets excluded)"
    fit = {
        "objective": "mlm",
        "approach1": a1.to_dict(),
        "approach1_bootstrap": boot1.to_dict(),
        "approach2": {"method": "approach2", "budgets": [], "n_opt": None, "d_opt": None,
                      "law_reason": a2_reason, "exclude_edge": True},
        "approach2_bootstrap": {"method": "approach2_bootstrap", "skipped_reason": f"no law: {a2_reason}"},
        "approach3": a3_dict,
        "approach3_bootstrap": fits.approach3_bootstrap(n, d, y, n_resamples=3, seed=0, full_fit=a3,
                                                         grid=fits.Approach3Grid.small()).to_dict(),
    }  # fmt: skip
    return runs, curves, fit, a2_reason


def legend_texts(ax) -> list[str]:
    return [t.get_text().replace("\n", " ") for t in ax.get_legend().get_texts()]


def test_optimal_figure_draws_only_fitted_laws_with_their_intervals(unfitted_fit_result):
    _, _, fit, a2_reason = unfitted_fit_result
    fig = optimal_figure(fit, "mlm")
    s = fit["approach1_bootstrap"]["samples"]
    for ax, law in zip(fig.axes, ("n_opt", "d_opt"), strict=True):
        drawn = [ln.get_label() for ln in ax.get_lines() if len(ln.get_xdata())]
        laws = [label for label in drawn if "· C^" in label]
        # only Approach 1's law is drawn, its exponent's 95% interval in brackets, computed here
        assert len(laws) == 1 and laws[0].startswith("Approach 1: ")
        lo, hi = np.percentile(s[f"{law}_exponent"], [2.5, 97.5])
        assert laws[0].endswith(f"[{lo:.3f}, {hi:.3f}]")
        texts = legend_texts(ax)
        assert f"Approach 2: not fitted — {a2_reason}" in texts
        assert (
            "Approach 3: not fitted — did not converge (STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT)" in texts
        )
        assert ax.get_legend().get_title().get_text() == "shaded band, [ ]: 95% bootstrap interval"
        # one shaded band (Approach 1's), the pointwise 2.5/97.5 percentiles over its draws
        (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == laws[0]]
        c0 = line.get_xdata()[0]
        values = [k * c0**a for k, a in zip(s[f"{law}_coefficient"], s[f"{law}_exponent"], strict=True)]
        ys = sorted(v[1] for v in band.get_paths()[0].vertices if math.isclose(v[0], c0, rel_tol=1e-12))
        assert [ys[0], ys[-1]] == pytest.approx(list(np.percentile(values, [2.5, 97.5])))
    plt.close(fig)


def test_plot_objective_names_unfitted_laws_in_every_figure(tmp_path, monkeypatch, unfitted_fit_result):
    runs, curves, fit, a2_reason = unfitted_fit_result
    legends: dict[str, list[list[str]]] = {}
    real_save = plots.save_figure

    def save_and_record(fig, png, svg, dpi):
        legends[Path(png).stem] = [legend_texts(ax) for ax in fig.axes if ax.get_legend()]
        real_save(fig, png, svg, dpi)

    monkeypatch.setattr(plots, "save_figure", save_and_record)
    paths = {}
    for name, frame in (("runs", runs), ("curves", curves)):
        paths[name] = str(tmp_path / f"{name}.parquet")
        frame.write_parquet(paths[name])
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    names = ("isoflop", "optimal_allocation", "loss_vs_compute", "learning_curves")
    outputs = {f"{f}_{e}": str(tmp_path / f"{f}.{e}") for f in names for e in ("png", "svg")}
    plot_objective(
        paths["runs"], paths["curves"], str(tmp_path / "fit.json"), outputs, objective="mlm", dpi=30
    )
    assert all((tmp_path / f"{f}.png").read_bytes()[:4] == b"\x89PNG" for f in names)
    assert all(b"<svg" in (tmp_path / f"{f}.svg").read_bytes()[:2000] for f in names)
    assert f"Approach 2: not fitted — no N_opt(C) law: {a2_reason}" in legends["isoflop"][0]
    assert len(legends["optimal_allocation"]) == 2
    (loss_law,) = [t for t in legends["loss_vs_compute"][0] if t.startswith("Approach 1: L = ")]
    lo, hi = np.percentile(fit["approach1_bootstrap"]["samples"]["loss_exponent"], [2.5, 97.5])
    assert loss_law.endswith(f"[{lo:.3f}, {hi:.3f}]")


def test_loss_figure_of_a_skipped_approach1_draws_no_law(unfitted_fit_result):
    _, curves, fit, _ = unfitted_fit_result
    skipped = {**fit, "approach1": {"method": "approach1", "skipped_reason": "only 1 envelope point(s)"}}
    fig = loss_compute_figure(curves, skipped, "mlm")
    (ax,) = fig.axes
    assert legend_texts(ax) == ["Approach 1: not fitted — only 1 envelope point(s)"]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]  # no band either
    plt.close(fig)


def test_extrapolation_check_on_own_runs(synthetic_fit):
    """Fit on the 4 smaller budgets, predict the 1e21 one: each law's N_opt there is the true N_opt
    (Hoffmann eq. 4, written out in n_opt_true) within 10%. Approach 3's loss is within 1%; Approach 2's loss
    law is a pure power law L_opt(C) with no irreducible term, so with E = 1.69 it undershoots (by 4.6%)."""
    ext = synthetic_fit["extrapolation"]
    for method in ("approach2", "approach3"):
        (held,) = ext[method]["held_out"]
        assert held["budget"] == pytest.approx(1e21)
        assert held["predicted_n_opt"] == pytest.approx(n_opt_true(1e21), rel=0.1)
    assert abs(ext["approach3"]["held_out"][0]["loss_relative_error"]) < 0.01
    assert -0.06 < ext["approach2"]["held_out"][0]["loss_relative_error"] < -0.03
    runs, _ = synthetic_study()
    two = runs.filter(pl.col("flops_budget") < 1e19)
    assert own_extrapolation(two, exclude_edge=True, init_grid=Approach3Grid.small(), huber_delta=1e-3) == {
        "skipped_reason": "2 budget(s); the extrapolation check needs at least 3"
    }
