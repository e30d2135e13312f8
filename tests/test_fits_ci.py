"""Tests of the bootstrap intervals (plmscale.fits), the data-constrained and transfer laws and the
extrapolation check (plmscale.data_constrained, .transfer, .extrapolation): hand-worked values, noiseless
recovery and independent re-implementations of the resampling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from plmscale.data_constrained import effective_params, effective_tokens, fit_data_constrained
from plmscale.extrapolation import extrapolation_check
from plmscale.fits import (
    Approach3Grid,
    approach1,
    approach1_bootstrap,
    approach2,
    approach2_bootstrap,
    approach3,
    interval,
)
from plmscale.powerlaw import compute_optimal_laws
from plmscale.transfer import effectively_transferred_tokens, fit_transfer_law, tokens_to_reach

# Hoffmann et al. 2022 Approach 3 coefficients, the "true" law of the synthetic data (as in test_fits.py).
E0, A0, B0, ALPHA0, BETA0 = 1.69, 406.4, 410.7, 0.34, 0.28
A_EXP0 = BETA0 / (ALPHA0 + BETA0)
R_STAR_D = 15.387756  # datablations (Muennighoff et al. 2023) fitted R_D*


def law(n, d, e=E0, a=A0, b=B0, alpha=ALPHA0, beta=BETA0):
    return e + a * np.power(n, -alpha) + b * np.power(d, -beta)


def isoflop_grid(budgets, ratios, a=A0, b=B0, alpha=ALPHA0, beta=BETA0):
    n_law, _ = compute_optimal_laws(a, b, alpha, beta)
    c = np.repeat(budgets, len(ratios))
    n = np.concatenate([n_law(cb) * ratios for cb in budgets])
    return c, n, c / (6.0 * n)


def assert_json_plain(obj) -> None:
    text = json.dumps(obj, allow_nan=False)
    assert json.loads(text) == obj


# ------------------------------------------------------------------------------------------ interval


def test_interval_hand_worked():
    # 0, 1, ..., 100: linear-interpolated percentiles equal the percentile value itself
    assert interval(np.arange(101.0)) == pytest.approx({"lo": 2.5, "median": 50.0, "hi": 97.5})
    assert interval([4.0, 4.0]) == {"lo": 4.0, "median": 4.0, "hi": 4.0}
    with pytest.raises(ValueError, match="every bootstrap resample failed"):
        interval([])
    with pytest.raises(ValueError, match="non-finite"):
        interval([1.0, float("nan")])


# ------------------------------------------------------------------------------------- approach 1 bootstrap


def synthetic_curves(n_sizes: int, n_points: int, e: float = 0.0):
    sizes = np.geomspace(1e7, 4e10, n_sizes)
    c_grid = np.geomspace(1e17, 1e23, n_points)
    run = np.repeat(np.arange(n_sizes), n_points)
    n = np.repeat(sizes, n_points)
    c = np.tile(c_grid, n_sizes)
    d = c / (6 * n)
    return {"run_id": run, "flops": c, "n_params": n, "num_tokens": d, "loss": law(n, d, e=e)}


def test_approach1_bootstrap_deterministic_and_brackets_truth():
    curves = synthetic_curves(n_sizes=40, n_points=60)
    first = approach1_bootstrap(curves, n_bins=15, n_resamples=25, seed=3)
    again = approach1_bootstrap(curves, n_bins=15, n_resamples=25, seed=3)
    other = approach1_bootstrap(curves, n_bins=15, n_resamples=25, seed=4)
    assert first.samples == again.samples
    assert first.samples != other.samples
    assert first.full_fit == approach1(curves, n_bins=15)
    assert first.n_failed == 0 and first.n_succeeded == 25
    for name in ("n_opt_exponent", "d_opt_exponent", "loss_exponent", "n_opt_coefficient"):
        iv = first.percentiles[name]
        assert iv["lo"] <= iv["median"] <= iv["hi"]
        assert iv == interval(first.samples[name])
        assert len(first.samples[name]) == 25
    # resampling whole runs of a noiseless family only removes sizes: the envelope exponent stays near truth
    iv = first.percentiles["n_opt_exponent"]
    assert iv["lo"] - 0.03 < A_EXP0 < iv["hi"] + 0.03
    d = first.to_dict()
    assert d["method"] == "approach1_bootstrap" and d["resample_unit"] == "run"
    assert len(d["samples"]["n_opt_exponent"]) == 25
    assert "samples" not in first.to_dict(include_samples=False)
    assert_json_plain(d)
    pl = pytest.importorskip("polars")
    assert (
        approach1_bootstrap(pl.DataFrame(curves), n_bins=15, n_resamples=25, seed=3).samples == first.samples
    )


def test_approach1_bootstrap_counts_failed_resamples():
    """Run 'a' logs only flops 1, run 'b' only flops 100, run 'c' both. A resample fits only if its runs cover
    both flops values (otherwise all flops are equal and approach1 raises). The count is replayed with the
    same generator calls (3 runs drawn with replacement per resample)."""
    curves = {
        "run_id": np.array(["a", "b", "c", "c"]),
        "flops": np.array([1.0, 100.0, 1.0, 100.0]),
        "n_params": np.array([1.0, 4.0, 2.0, 2.0]),
        "num_tokens": np.array([1 / 6, 100 / 24, 1 / 12, 100 / 12]),
        "loss": np.array([5.0, 2.0, 5.5, 2.5]),
    }
    res = approach1_bootstrap(curves, n_bins=2, n_resamples=40, seed=7)
    covers = {"a": {1.0}, "b": {100.0}, "c": {1.0, 100.0}}
    rng = np.random.default_rng(7)
    expected = 0
    for _ in range(40):
        pick = rng.integers(0, 3, size=3)
        expected += set().union(*(covers["abc"[j]] for j in pick)) != {1.0, 100.0}
    assert 0 < expected < 40
    assert res.n_failed == expected
    assert res.failure_messages and "all flops are equal" in res.failure_messages[0]
    assert res.failure_messages[0].endswith(f"(x{expected})")
    assert_json_plain(res.to_dict())


def test_approach1_bootstrap_errors():
    curves = synthetic_curves(n_sizes=5, n_points=10)
    with pytest.raises(ValueError, match="n_resamples"):
        approach1_bootstrap(curves, n_bins=5, n_resamples=1, seed=0)
    with pytest.raises(ValueError, match="lacks column"):
        approach1_bootstrap({k: v for k, v in curves.items() if k != "loss"}, n_bins=5, n_resamples=2, seed=0)


# ------------------------------------------------------------------------------------- approach 2 bootstrap


def test_approach2_bootstrap_noisy_brackets_truth():
    c, n, d = isoflop_grid(np.geomspace(1e18, 1e21, 7), np.geomspace(1 / 8, 8, 9))
    loss = law(n, d) + 0.01 * np.random.default_rng(5).standard_normal(len(n))
    res = approach2_bootstrap(c, n, loss, n_resamples=60, seed=1)
    again = approach2_bootstrap(c, n, loss, n_resamples=60, seed=1)
    assert res.samples == again.samples
    assert res.full_fit == approach2(c, n, loss)
    iv = res.percentiles["n_opt_exponent"]
    assert iv["lo"] < A_EXP0 < iv["hi"]
    assert iv["lo"] < res.full_fit.n_opt.exponent < iv["hi"]
    # N_opt and D_opt laws of each draw multiply to about C/6 (6 N D = C per budget)
    ks = np.array(res.samples["n_opt_coefficient"]) * np.array(res.samples["d_opt_coefficient"])
    ps = np.array(res.samples["n_opt_exponent"]) + np.array(res.samples["d_opt_exponent"])
    assert ks == pytest.approx(1 / 6, rel=1e-9) and ps == pytest.approx(1.0, abs=1e-12)
    assert res.to_dict()["method"] == "approach2_bootstrap"
    assert_json_plain(res.to_dict())


def test_approach2_bootstrap_stratified_failures_by_hand():
    """Two budgets of three sizes (one run each, exact convex parabolas). A stratified redraw keeps a budget
    usable only if it draws all three sizes (6 of 27 draws); the law needs both budgets. Successful resamples
    reproduce the original data, so every draw equals the full fit. The count is replayed with the same
    generator calls (per budget, ascending: integers(0, 3, size=3))."""
    u = np.array([-1.0, 0.0, 1.0])
    n = np.concatenate([1e8 * np.exp(u), 1e9 * np.exp(u)])
    c = np.repeat([1e18, 1e20], 3)
    loss = np.concatenate([u**2 + 3.0, u**2 + 2.7])
    res = approach2_bootstrap(c, n, loss, n_resamples=200, seed=11)
    rng = np.random.default_rng(11)
    ok = 0
    for _ in range(200):
        draws = [rng.integers(0, 3, size=3) for _ in range(2)]
        ok += all(len(set(dr.tolist())) == 3 for dr in draws)
    assert 2 <= ok < 200
    assert res.n_succeeded == ok and res.n_failed == 200 - ok
    assert "power laws need >= 2" in res.failure_messages[0]
    assert res.full_fit.n_opt.exponent == pytest.approx(0.5)  # 1e8 -> 1e9 over 100x compute
    assert set(res.samples["n_opt_exponent"]) == {res.full_fit.n_opt.exponent}
    assert res.percentiles["n_opt_exponent"] == pytest.approx({"lo": 0.5, "median": 0.5, "hi": 0.5})


def test_approach2_bootstrap_all_fail_raises():
    # a single budget can never give a law
    with pytest.raises(ValueError, match="only 0 of 5 resamples"):
        approach2_bootstrap([1e18] * 3, [1e8, 2e8, 4e8], [3.0, 2.9, 3.0], n_resamples=5, seed=0)


# ------------------------------------------------------------------------------------------ data-constrained


def test_effective_tokens_hand_worked():
    # R_D = 0 (one epoch) and fewer than one epoch: D' = D
    assert effective_tokens(100.0, 100.0, 15.4) == pytest.approx(100.0)
    assert effective_tokens(40.0, 100.0, 15.4) == pytest.approx(40.0)
    # U = 100, D = 300: R_D = 2; R* = 2: D' = 100 + 100 * 2 * (1 - e^-1) = 226.424...
    assert effective_tokens(300.0, 100.0, 2.0) == pytest.approx(100 + 200 * (1 - math.exp(-1)), rel=1e-12)
    # many repetitions saturate at U (1 + R*)
    assert effective_tokens(1e9, 100.0, 15.4) == pytest.approx(100 * 16.4, rel=1e-12)
    # few repetitions relative to R*: almost like fresh data (second order: D' ~ D - U R^2 / (2 R*))
    assert effective_tokens(110.0, 100.0, 1e6) == pytest.approx(110.0, rel=1e-7)
    out = effective_tokens(np.array([50.0, 300.0]), 100.0, 2.0)
    assert out == pytest.approx([50.0, 100 + 200 * (1 - math.exp(-1))])
    assert effective_params(300.0, 100.0, 2.0) == effective_tokens(300.0, 100.0, 2.0)
    with pytest.raises(ValueError, match="r_star must be a finite positive"):
        effective_tokens(300.0, 100.0, 0.0)
    with pytest.raises(ValueError, match="unique_tokens must be > 0"):
        effective_tokens(300.0, 0.0, 2.0)


@pytest.fixture(scope="module")
def single_epoch_base():
    """Approach 3 fitted on noiseless single-epoch IsoFLOP runs (recovers the true law)."""
    _, n, d = isoflop_grid(np.geomspace(1e18, 1e21, 6), np.geomspace(1 / 8, 8, 7))
    return approach3(n, d, law(n, d), init_grid=Approach3Grid.small())


def repeated_runs():
    """3 sizes x 2 unique-data sizes x epochs 0.5 .. 100."""
    n = np.repeat([1e8, 3e8, 1e9], 12)
    unique = np.tile(np.repeat([1e9, 4e9], 6), 3)
    d = unique * np.tile([0.5, 1.0, 4.0, 16.0, 40.0, 100.0], 6)
    return n, d, unique


def test_fit_data_constrained_noiseless_recovery(single_epoch_base):
    base = single_epoch_base
    n, d, unique = repeated_runs()
    loss = law(n, effective_tokens(d, unique, R_STAR_D), base.E, base.A, base.B, base.alpha, base.beta)
    fit = fit_data_constrained(n, d, unique, loss, base=base)
    assert fit.r_star_d == pytest.approx(R_STAR_D, rel=1e-6)
    assert fit.n_repeated == 24 and fit.n_points == 36 and not fit.at_bound
    assert fit.objective < 1e-14
    assert fit.predict(n, d, unique) == pytest.approx(loss, rel=1e-9)
    assert fit.to_dict()["method"] == "data_constrained"
    assert_json_plain(fit.to_dict())


def test_fit_data_constrained_noisy(single_epoch_base):
    """0.3% multiplicative noise: over 5 seeds R_D* ranged 15.0 .. 15.6 (truth 15.39); 10% band."""
    base = single_epoch_base
    n, d, unique = repeated_runs()
    loss = law(n, effective_tokens(d, unique, R_STAR_D), base.E, base.A, base.B, base.alpha, base.beta)
    noisy = loss * np.exp(0.003 * np.random.default_rng(0).standard_normal(len(loss)))
    assert fit_data_constrained(n, d, unique, noisy, base=base).r_star_d == pytest.approx(R_STAR_D, rel=0.1)


def test_fit_data_constrained_unidentified(single_epoch_base):
    base = single_epoch_base
    n, d, unique = repeated_runs()
    # repetition costs nothing (D' = D): the optimum runs to the upper bound
    loss = law(n, d, base.E, base.A, base.B, base.alpha, base.beta)
    fit = fit_data_constrained(n, d, unique, loss, base=base, r_star_bounds=(0.1, 1e3))
    assert fit.at_bound and fit.r_star_d == pytest.approx(1e3, rel=1e-4)
    single = d <= unique
    with pytest.raises(ValueError, match="none of the 12 runs repeats its data"):
        fit_data_constrained(n[single], d[single], unique[single], loss[single], base=base)


# ------------------------------------------------------------------------------------------ transfer law


def test_fit_transfer_law_hand_worked():
    # D_t = N / D_F (k = alpha = beta = 1) through three points
    res = fit_transfer_law([1.0, 10.0, 1.0], [1.0, 1.0, 10.0], [1.0, 10.0, 0.1])
    assert (res.k, res.alpha, res.beta) == pytest.approx((1.0, 1.0, 1.0), rel=1e-12)
    assert res.rms_log_residual == pytest.approx(0.0, abs=1e-12)
    assert res(100.0, 4.0) == pytest.approx(25.0)
    assert res.to_dict()["method"] == "transfer_law"
    assert_json_plain(res.to_dict())


def test_transfer_law_recovered_through_tokens_to_reach():
    """End to end: a from-scratch curve L(D) = E + B D^-beta; a transferred run with D_F fine-tuning tokens
    reaches the loss the scratch run has at D_F + D_t, D_t from a known law. tokens_to_reach on the (dense,
    log-spaced) scratch curve recovers D_scratch, D_t = D_scratch - D_F, and the law is refitted."""
    k, alpha, beta = 1e7, 0.3, 0.6  # D_t from 1.6e8 to 1e10, comparable to D_F (else D_t << D_F is lost)
    e, b, bd = 2.0, 50.0, 0.3
    grid = np.geomspace(1e6, 1e13, 4000)
    scratch = e + b * grid**-bd
    n, df = np.meshgrid([1e7, 1e8, 1e9], [1e8, 1e9, 1e10])
    n, df = n.ravel(), df.ravel()
    dt_true = k * df**-alpha * n**beta
    dt = []
    for target in e + b * (df + dt_true) ** -bd:
        reached = tokens_to_reach(grid, scratch, float(target))
        assert reached is not None
        dt.append(reached)
    dt = np.array(dt) - df
    assert dt == pytest.approx(dt_true, rel=2e-3)
    res = fit_transfer_law(n, df, dt)
    assert (res.k, res.alpha, res.beta) == pytest.approx((k, alpha, beta), rel=2e-3)


def test_fit_transfer_law_errors():
    with pytest.raises(ValueError, match="collinear"):
        fit_transfer_law([1.0, 10.0, 100.0], [1.0, 10.0, 100.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"index 1: -5\.0\): transfer did not help"):
        fit_transfer_law([1.0, 10.0, 1.0], [1.0, 1.0, 10.0], [1.0, -5.0, 0.1])
    with pytest.raises(ValueError, match="needs >= 3 points"):
        fit_transfer_law([1.0, 10.0], [1.0, 1.0], [1.0, 10.0])


def test_effectively_transferred_tokens_hand_worked():
    """Scratch loss 3 - 0.1 ln(D/1e6), linear in ln D, so log-linear interpolation is exact. The transferred
    run logs at 1e7, 1e8, 1e9, 1e10 the losses scratch has at 3e7, 1.5e8 (then a noisy 2.9: its best so far,
    the 1e8 loss, counts at 1e9), and 5e9 (below 1e10 tokens: transfer hurt there)."""
    scratch_t = np.geomspace(1e6, 1e11, 6)  # one point per decade
    scratch_l = 3.0 - 0.1 * np.log(scratch_t / 1e6)

    def loss_at(d: float) -> float:
        return 3.0 - 0.1 * math.log(d / 1e6)

    transfer_t = [1e7, 1e8, 1e9, 1e10]
    transfer_l = [loss_at(3e7), loss_at(1.5e8), 2.9, loss_at(5e9)]
    d_t = effectively_transferred_tokens(scratch_t, scratch_l, transfer_t, transfer_l, transfer_t)
    assert d_t == pytest.approx([2e7, 5e7, 1.5e8 - 1e9, 5e9 - 1e10], rel=1e-12)
    # between logged points D_F keeps the last logged loss: at 5e7 the 1e7 point's loss (reached at 3e7)
    between = effectively_transferred_tokens(scratch_t, scratch_l, transfer_t, transfer_l, [5e7])
    assert between == pytest.approx([3e7 - 5e7])
    # a transferred loss the scratch run never reaches (below its last point, loss_at(1e11))
    assert effectively_transferred_tokens(scratch_t, scratch_l, [1e7], [loss_at(1e12)], [1e7]) == [None]
    with pytest.raises(ValueError, match="before the transferred run's first logged point"):
        effectively_transferred_tokens(scratch_t, scratch_l, transfer_t, transfer_l, [1e6])
    with pytest.raises(ValueError, match="increase strictly"):
        effectively_transferred_tokens(scratch_t, scratch_l, [1e8, 1e7], [2.0, 1.9], [1e8])


def test_tokens_to_reach_hand_worked():
    t, y = [1e6, 1e7, 1e8], [3.0, 2.5, 2.0]
    assert tokens_to_reach(t, y, 2.25) == pytest.approx(10**7.5)  # halfway in ln t
    assert tokens_to_reach(t, y, 2.5) == pytest.approx(1e7)
    assert tokens_to_reach(t, y, 3.5) == 1e6  # already below at the first point
    assert tokens_to_reach(t, y, 1.5) is None  # never reached
    # noisy curve: the first crossing counts; 5/6 of the way from 1e6 to 1e7 in ln t
    t2, y2 = [1e6, 1e7, 1e8, 1e9], [3.0, 2.4, 2.6, 2.0]
    assert tokens_to_reach(t2, y2, 2.5) == pytest.approx(1e6 * 10 ** (5 / 6))
    with pytest.raises(ValueError, match="increase strictly"):
        tokens_to_reach([1e6, 1e6], [3.0, 2.0], 2.5)
    with pytest.raises(ValueError, match="empty"):
        tokens_to_reach([], [], 2.5)


# ------------------------------------------------------------------------------------------ extrapolation


def test_extrapolation_approach2_hand_worked():
    """Exact parabolas (ln N - ln v)^2 + L0 on sizes v e^{-1,0,1}. Fitting budgets: 1e18 (v=1e8, L0=3.0)
    and 1e20 (v=1e9, L0=2.7) -> N_opt = 1e8 (C/1e18)^0.5, L_opt = 3.0 (C/1e18)^(ln 0.9 / ln 100).
    At 1e22: predicted N_opt 1e10, L_opt 3.0 * 0.9^2 = 2.43; observed v=2e10, L0=2.5."""
    u = np.array([-1.0, 0.0, 1.0])
    vertices = {1e18: (1e8, 3.0), 1e20: (1e9, 2.7), 1e22: (2e10, 2.5)}
    c = np.repeat(list(vertices), 3)
    n = np.concatenate([v * np.exp(u) for v, _ in vertices.values()])
    loss = np.concatenate([u**2 + l0 for _, l0 in vertices.values()])
    res = extrapolation_check(c, n, loss, cutoff_flops=1e21)
    assert res.fit_budgets == (1e18, 1e20) and res.n_fit_runs == 6
    (h,) = res.held_out
    assert h.budget == 1e22 and h.n_runs == 3
    assert h.predicted_n_opt == pytest.approx(1e10, rel=1e-9)
    assert h.observed_n_opt == pytest.approx(2e10, rel=1e-9)
    assert h.n_opt_ratio == pytest.approx(0.5, rel=1e-9)
    assert res.max_abs_log_ratio == pytest.approx(math.log(2), rel=1e-9)
    assert h.predicted_loss == pytest.approx(2.43, rel=1e-9)
    assert h.observed_parabola_loss == pytest.approx(2.5) and h.observed_min_loss == pytest.approx(2.5)
    assert h.loss_reference == "observed_parabola_loss"
    assert h.loss_relative_error == pytest.approx(2.43 / 2.5 - 1, rel=1e-9)
    assert h.best_n == pytest.approx(2e10) and h.best_d == pytest.approx(1e22 / (6 * 2e10))
    assert not h.observed_at_edge
    assert res.to_dict()["method"] == "extrapolation_check/approach2"
    assert_json_plain(res.to_dict())


def test_extrapolation_approach2_noiseless_law():
    """E = 0 on a grid symmetric in ln N about the true optimum: every profile has the same shape up to
    scale (see test_fits.test_approach2_noiseless_exact_exponent), so the parabola minima follow exact power
    laws and the extrapolation is exact."""
    budgets = np.geomspace(1e18, 1e22, 9)
    c, n, d = isoflop_grid(budgets, np.geomspace(1 / 8, 8, 9))
    res = extrapolation_check(c, n, law(n, d, e=0.0), cutoff_flops=3e20)
    assert len(res.fit_budgets) == 5 and len(res.held_out) == 4
    for h in res.held_out:
        assert h.n_opt_ratio == pytest.approx(1.0, abs=1e-9)
        assert h.loss_relative_error == pytest.approx(0.0, abs=1e-9)


def test_extrapolation_approach3_noiseless_law():
    """alpha = beta, A = B: the profile is symmetric in ln(N / N_opt), so the held-out parabola's minimum is
    the true N_opt and Approach 3 (exact on noiseless data) predicts it and the best run's loss."""
    kw = {"a": 300.0, "b": 300.0, "alpha": 0.3, "beta": 0.3}
    c, n, d = isoflop_grid(np.geomspace(1e18, 1e21, 7), np.geomspace(1 / 8, 8, 9), **kw)
    res = extrapolation_check(
        c, n, law(n, d, e=1.5, **kw), cutoff_flops=2e20, method="approach3", init_grid=Approach3Grid.small()
    )
    assert len(res.held_out) == 2
    assert res.fit["alpha"] == pytest.approx(0.3, rel=1e-5)
    for h in res.held_out:
        assert h.n_opt_ratio == pytest.approx(1.0, abs=1e-4)
        assert h.loss_reference == "observed_min_loss"
        assert h.loss_relative_error == pytest.approx(0.0, abs=1e-7)
        assert h.best_n == pytest.approx(compute_optimal_laws(300.0, 300.0, 0.3, 0.3)[0](h.budget))
    assert_json_plain(res.to_dict())


def test_extrapolation_errors():
    c, n, d = isoflop_grid(np.geomspace(1e18, 1e20, 3), np.geomspace(1 / 4, 4, 5))
    loss = law(n, d)
    with pytest.raises(ValueError, match="leaves 0 budget"):
        extrapolation_check(c, n, loss, cutoff_flops=1e17)
    with pytest.raises(ValueError, match="and 0 to predict"):
        extrapolation_check(c, n, loss, cutoff_flops=1e21)
    with pytest.raises(ValueError, match="method must be"):
        extrapolation_check(c, n, loss, cutoff_flops=5e18, method="approach1")
    with pytest.raises(ValueError, match=r"approach2 on the budgets <= cutoff has no N_opt law.*approach3"):
        extrapolation_check(c, n, loss, cutoff_flops=5e18)
