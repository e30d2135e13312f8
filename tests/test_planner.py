"""Tests of plmscale.planner against closed forms and hand-computed plans."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from plmscale import planner
from plmscale.fits import Approach3Grid, approach2, approach2_bootstrap, approach3, approach3_bootstrap
from plmscale.flops import ModelShape, n_params_non_embedding

E, A, B, ALPHA, BETA = 1.8, 400.0, 400.0, 0.5, 0.5
H100_BF16 = 9.89e14


def symmetric_fit() -> dict:
    """alpha = beta, A = B: G = 1 and N_opt = D_opt = sqrt(C / 6) (Hoffmann eq. 4), written by hand."""
    law = {"coefficient": 6**-0.5, "exponent": 0.5}
    return {
        "objective": "clm",
        "budgets": [1e17, 1e19, 1e21],
        "approach1": {"method": "approach1", "skipped_reason": "only 1 envelope point(s) from 3 points"},
        "approach2": {
            "method": "approach2",
            "budgets": [],
            "n_opt": None,
            "d_opt": None,
            "law_reason": "1 usable budget(s) of 3; power laws need >= 2",
            "exclude_edge": False,
        },
        "approach3": {"method": "approach3", "E": E, "A": A, "B": B, "alpha": ALPHA, "beta": BETA,
                      "n_opt": dict(law), "d_opt": dict(law), "law_reason": None},
    }  # fmt: skip


PLAN_KW = {"objective": "clm", "tokens_per_step": 512 * 1024, "device_peak_flops": H100_BF16, "mfu": 0.4,
           "context": 1024}  # fmt: skip


def loss_at(n: float, d: float) -> float:
    return E + A / n**ALPHA + B / d**BETA


def test_plan_closed_form_and_shape():
    c = 1e20
    p = planner.plan(symmetric_fit(), flops=c, **PLAN_KW)
    n_opt = math.sqrt(c / 6)  # 4.0825e9
    assert p.method == "approach3"
    assert p.n_opt == pytest.approx(n_opt, rel=1e-12)
    assert p.d_opt == pytest.approx(n_opt, rel=1e-12)
    assert p.predicted_loss_at_optimum == pytest.approx(E + 2 * A / math.sqrt(n_opt), rel=1e-12)
    # the shape: exact N, aspect ratio in range, within 3% of N_opt (the grid is dense at 4e9: the closest
    # in-range shape is within 0.01%, and the rule allows 2% more to pick a central aspect ratio)
    s = p.shape
    assert p.n_params == n_params_non_embedding(s, 33)
    assert 32 <= s.width / s.layers <= 256
    assert abs(math.log(p.n_params / n_opt)) < math.log(1.03)
    assert s.width % 64 == 0 and s.head_dim in (64, 128) and s.width % s.heads == 0
    # D, steps and GPU-hours follow from the exact N
    d = c / (6 * p.n_params)
    assert p.num_tokens == pytest.approx(d, rel=1e-12)
    assert p.steps == math.ceil(d / (512 * 1024))
    fpt = 6 * p.n_params + 12 * s.layers * s.width * 1024
    assert p.gpu_hours == pytest.approx(fpt * d / (H100_BF16 * 0.4) / 3600, rel=1e-12)
    assert p.predicted_loss == pytest.approx(loss_at(p.n_params, d), rel=1e-12)
    assert p.loss_interval is None and "no approach3 bootstrap" in p.loss_interval_kind
    assert p.notes == ()
    d_out = p.to_dict()
    assert d_out["method"] == "approach3" and d_out["shape"]["layers"] == s.layers
    assert json.loads(json.dumps(d_out, allow_nan=False)) == d_out
    text = planner.format_plan(p)
    for needle in ("method: approach3", "params", "tokens", "GPU-hours", "40% MFU", "nats/token", "CLM"):
        assert needle in text


def test_plan_hand_computed_with_given_shapes():
    """shapes = [1 x 512 (aspect 512, out of range), 2 x 128 (aspect 64)]: the in-range shape wins.
    N(2 x 128, vocab 33) by hand: per block 4 (128^2 + 128) + 4*128 + 2*128*512 + 512 + 128 = 198,272;
    outside 2*128 + 2*128 + (128^2 + 128) + 2*128 + 33 = 17,313; N = 2 * 198,272 + 17,313 = 413,857."""
    shapes = [ModelShape(1, 512, 8), ModelShape(2, 128, 2)]
    c = 1e17
    p = planner.plan(symmetric_fit(), flops=c, objective="clm", tokens_per_step=64 * 512,
                     device_peak_flops=1e14, mfu=0.5, context=512, shapes=shapes)  # fmt: skip
    assert p.shape == ModelShape(2, 128, 2)
    assert p.n_params == 413_857
    d = 1e17 / (6 * 413_857)  # 4.0272e10 tokens
    assert p.num_tokens == pytest.approx(d)
    assert p.steps == 1_228_991  # ceil(4.0271559e10 / 32768)
    # (6 N + 12 L d T) = 2,483,142 + 1,572,864 = 4,056,006 FLOPs/token
    assert p.flops_per_token == 4_056_006
    assert p.gpu_hours == pytest.approx(4_056_006 * d / (1e14 * 0.5) / 3600, rel=1e-12)  # 0.9075 h
    assert p.gpu_hours == pytest.approx(0.90745, abs=1e-5)
    # N_opt = sqrt(1e17 / 6) = 1.29e8 is far from both shapes: said in a note
    assert any("outside the shape search space" in n for n in p.notes)


def test_nearest_shape_rule_against_brute_force():
    shapes = planner.candidate_shapes()
    assert len(shapes) == 96 * 256
    for target in (3e6, 8.5e7, 6.5e8, 1.2e10):
        s, n = planner.nearest_shape(target)
        in_range = [x for x in shapes if 32 <= x.width / x.layers <= 256]
        best = min(abs(math.log(n_params_non_embedding(x, 33) / target)) for x in in_range)
        assert 32 <= s.width / s.layers <= 256
        assert n == n_params_non_embedding(s, 33)
        assert abs(math.log(n / target)) <= best + math.log(1.02) + 1e-12
        assert s.head_dim == (128 if s.width >= 2048 and s.width % 128 == 0 else 64)
    with pytest.raises(ValueError, match="n_target"):
        planner.nearest_shape(0.0)
    with pytest.raises(ValueError, match="shapes is empty"):
        planner.nearest_shape(1e8, shapes=[])


def test_missing_law_errors_name_the_fix():
    fit = symmetric_fit()
    with pytest.raises(ValueError, match=r"approach2 has no N_opt law in this fit: 1 usable budget.*; "
                                         r"use --method approach3"):  # fmt: skip
        planner.plan(fit, flops=1e20, method="approach2", **PLAN_KW)
    with pytest.raises(ValueError, match="approach1 has no N_opt law in this fit: only 1 envelope"):
        planner.plan(fit, flops=1e20, method="approach1", **PLAN_KW)
    del fit["approach3"]
    with pytest.raises(ValueError, match="absent from the fit result; no method in this fit has a law"):
        planner.plan(fit, flops=1e20, **PLAN_KW)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"method": "approach4"}, "method must be one of"),
        ({"objective": "mlm"}, "fit_result is for objective 'clm'"),
        ({"mfu": 40.0}, r"mfu must be a fraction.*0\.4"),
        ({"flops": -1.0}, "flops must be a finite positive"),
        ({"tokens_per_step": 0}, "tokens_per_step must be a positive integer"),
    ],
)
def test_plan_argument_errors(change, match):
    kw = {**PLAN_KW, "flops": 1e20, **change}
    with pytest.raises(ValueError, match=match):
        planner.plan(symmetric_fit(), **kw)


def test_loss_interval_from_samples_and_from_percentiles():
    fit = symmetric_fit()
    draws = {"E": [1.7, 1.8, 1.9, 1.75, 1.85], "A": [380.0, 400.0, 420.0, 390.0, 410.0],
             "B": [390.0, 400.0, 410.0, 420.0, 380.0], "alpha": [0.49, 0.5, 0.51, 0.5, 0.5],
             "beta": [0.5, 0.5, 0.5, 0.49, 0.51]}  # fmt: skip
    fit["approach3"]["bootstrap"] = {"samples": draws}
    p = planner.plan(fit, flops=1e20, **PLAN_KW)
    n, d = p.n_params, p.num_tokens
    per_draw = [e + a / n**al + b / d**be for e, a, b, al, be in zip(*draws.values(), strict=True)]
    lo, med, hi = np.percentile(per_draw, [2.5, 50, 97.5])
    assert p.loss_interval == pytest.approx({"lo": lo, "median": med, "hi": hi}, rel=1e-12)
    assert "5 resampled refits" in p.loss_interval_kind
    # only marginal percentiles (Approach3BootstrapResult.to_dict() layout): conservative box bounds
    pct = {k: {"lo": min(v), "median": float(np.median(v)), "hi": max(v)} for k, v in draws.items()}
    fit["approach3"]["bootstrap"] = {"percentiles": pct}
    p = planner.plan(fit, flops=1e20, **PLAN_KW)
    box_lo = 1.7 + 380 / n**0.51 + 380 / d**0.51
    box_hi = 1.9 + 420 / n**0.49 + 420 / d**0.49
    assert p.loss_interval["lo"] == pytest.approx(box_lo, rel=1e-12)
    assert p.loss_interval["hi"] == pytest.approx(box_hi, rel=1e-12)
    assert p.loss_interval["lo"] < p.predicted_loss < p.loss_interval["hi"]
    assert "conservative" in p.loss_interval_kind
    assert p.to_dict()["loss_interval"]["median"] is None  # not defined for bounds
    assert "95%" in planner.format_plan(p)


def test_n_opt_interval_from_law_samples():
    fit = symmetric_fit()
    ks, ps = [0.3, 0.4, 0.5, 0.45], [0.51, 0.5, 0.49, 0.5]
    fit["approach3"]["bootstrap"] = {"samples": {"n_opt_coefficient": ks, "n_opt_exponent": ps}}
    p = planner.plan(fit, flops=1e20, **PLAN_KW)
    vals = [k * 1e20**q for k, q in zip(ks, ps, strict=True)]
    lo, med, hi = np.percentile(vals, [2.5, 50, 97.5])
    assert p.n_opt_interval == pytest.approx({"lo": lo, "median": med, "hi": hi}, rel=1e-12)
    assert p.n_opt_interval["lo"] < p.n_opt < p.n_opt_interval["hi"]


def law(n, d, e=1.69, a=406.4, b=410.7, alpha=0.34, beta=0.28):
    return e + a * np.power(n, -alpha) + b * np.power(d, -beta)


def test_plan_with_real_fit_and_bootstrap_dicts():
    """The planner reads the dicts fits.py writes: approach2 with a LawBootstrapResult (samples), approach3
    with an Approach3BootstrapResult (percentiles only)."""
    budgets = np.geomspace(1e18, 1e21, 6)
    ratios = np.geomspace(1 / 8, 8, 7)
    n_true = 0.1 * budgets**0.45  # only the grid's centre; the law itself is Hoffmann's
    c = np.repeat(budgets, len(ratios))
    n = np.concatenate([nb * ratios for nb in n_true])
    d = c / (6 * n)
    loss = law(n, d) * np.exp(0.003 * np.random.default_rng(2).standard_normal(len(n)))
    a3 = approach3(n, d, loss, init_grid=Approach3Grid.small())
    b2 = approach2_bootstrap(c, n, loss, n_resamples=40, seed=0)
    b3 = approach3_bootstrap(
        n, d, loss, n_resamples=8, seed=0, full_fit=a3, grid=Approach3Grid.small(), n_grid_starts=1
    )
    fit = {
        "objective": "mlm",
        "approach2": {**approach2(c, n, loss).to_dict(), "bootstrap": b2.to_dict()},
        "approach3": {**a3.to_dict(), "bootstrap": b3.to_dict()},
    }
    fit = json.loads(json.dumps(fit))  # as read back from the JSON file
    p2 = planner.plan(fit, flops=3e21, method="approach2", **{**PLAN_KW, "objective": "mlm"})
    assert p2.n_opt_interval is not None and p2.n_opt_interval["lo"] < p2.n_opt < p2.n_opt_interval["hi"]
    assert any("Approach 3's L(N, D) at the approach2 allocation" in note for note in p2.notes)
    # Approach 3's bootstrap stores its per-draw parameters: the loss CI is propagated draw by draw
    assert p2.loss_interval is not None and p2.loss_interval_kind.startswith("bootstrap percentiles")
    assert p2.loss_interval["lo"] <= p2.loss_interval["median"] <= p2.loss_interval["hi"]
    # without the draws only the marginal intervals remain: a wider, conservative box
    no_draws = json.loads(json.dumps(fit))
    del no_draws["approach3"]["bootstrap"]["samples"]
    p2_box = planner.plan(no_draws, flops=3e21, method="approach2", **{**PLAN_KW, "objective": "mlm"})
    assert "conservative" in p2_box.loss_interval_kind
    assert (
        p2_box.loss_interval["lo"]
        <= p2.loss_interval["lo"]
        <= p2.loss_interval["hi"]
        <= p2_box.loss_interval["hi"]
    )
    # the paper layout: bootstraps at top level as "<method>_bootstrap" give the same plan
    paper_layout = {"objective": "mlm"}
    for m in ("approach2", "approach3"):
        paper_layout[m] = {k: v for k, v in fit[m].items() if k != "bootstrap"}
        paper_layout[f"{m}_bootstrap"] = fit[m]["bootstrap"]
    paper_layout["approach1_bootstrap"] = {"method": "approach1_bootstrap", "skipped_reason": "no curves"}
    p2_paper = planner.plan(paper_layout, flops=3e21, method="approach2", **{**PLAN_KW, "objective": "mlm"})
    assert p2_paper.to_dict() == p2.to_dict()
    assert planner.bootstrap_of(paper_layout, "approach1") is None
    p3 = planner.plan(fit, flops=3e21, **{**PLAN_KW, "objective": "mlm"})
    # Approach3BootstrapResult stores its draws: N_opt(C) is evaluated per draw
    assert p3.n_opt_interval_kind.startswith("bootstrap percentiles")
    assert p3.n_opt_interval["lo"] <= p3.n_opt_interval["median"] <= p3.n_opt_interval["hi"]
    assert p3.n_opt == pytest.approx(a3.n_opt(3e21), rel=1e-12)
    assert p3.predicted_loss == pytest.approx(a3.predict(p3.n_params, p3.num_tokens), rel=1e-12)
    assert p3.loss_interval["lo"] <= p3.predicted_loss <= p3.loss_interval["hi"]


def _done(path, n, mfu, peak, device):
    path.mkdir(parents=True)
    done = {"n_params_non_embedding": n, "mfu": mfu, "peak_flops_per_device": peak, "device": device}
    (path / "done.json").write_text(json.dumps(done))


def test_plan_cli_uses_the_mfu_measured_by_the_largest_accelerator_run(tmp_path, capsys):
    from plmscale.cli import main

    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps(symmetric_fit()))
    runs = tmp_path / "runs"
    _done(runs / "mlm/1e9/cpu", 9_000_000, 0.61, 1e11, "cpu (2 threads, AMD EPYC)")  # CPU: never used
    _done(runs / "mlm/1e9/small", 1_000_000, 0.21, 3.12e14, "cuda:0 NVIDIA A100-SXM4-80GB")
    _done(runs / "mlm/1e9/big", 5_000_000, 0.33, 3.12e14, "cuda:0 NVIDIA A100-SXM4-80GB")
    _done(runs / "mlm/1e9/none", 8_000_000, None, None, "cuda:0 NVIDIA A100-SXM4-80GB")
    args = ["plan", "--flops", "1e20", "--objective", "clm", "--fit", str(fit), "--method", "approach3"]
    assert main([*args, "--runs", str(runs), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["mfu"] == 0.33 and measured["device_peak_flops"] == 3.12e14
    assert "mlm/1e9/big" in measured["mfu_source"] and "N=5,000,000" in measured["mfu_source"]
    a100 = {**PLAN_KW, "mfu": 0.33, "device_peak_flops": 3.12e14}
    given = planner.plan(symmetric_fit(), flops=1e20, **a100)
    assert measured["gpu_hours"] == pytest.approx(given.gpu_hours)
    assert main([*args, "--runs", str(tmp_path / "nothing"), "--json"]) == 0
    assumed = json.loads(capsys.readouterr().out)
    assert assumed["mfu"] == 0.4 and assumed["mfu_source"].startswith("assumed")


# --------------------------------------------------------------------------------------------------------
# which fit, which method, how far outside the fitted range
# --------------------------------------------------------------------------------------------------------


def _write(path, fit):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fit))
    return path


def test_choose_fit_order(tmp_path):
    study_dir, paper_dir = tmp_path / "results/fits", tmp_path / "results/paper/fits"
    study, paper = study_dir / "clm.json", paper_dir / "clm.json"

    def choose(method="approach3", explicit=None):
        return planner.choose_fit("clm", method, explicit, study_dir, paper_dir)

    with pytest.raises(ValueError, match=r"neither .*results/fits/clm.json.*make run.*results/paper/fits/clm"
                                         r"\.json.*snakemake --cores all paper_figures"):  # fmt: skip
        choose()
    _write(paper, symmetric_fit())
    assert choose() == (paper, f"the paper's logs; no own study fit at {study}")
    _write(study, symmetric_fit())  # has approach3's laws, not approach2's
    assert choose() == (study, "your own study's fit")
    path, why = choose("approach2")
    assert path == paper and why.startswith(
        f"the paper's logs; {study} has no approach2 law: 1 usable budget"
    )
    path, why = choose("notebook_envelope")
    assert path == paper and "has no notebook_envelope law: the method is absent" in why
    paper.unlink()  # no paper fit: the study's, and plan() names the method that has a law
    path, why = choose("approach2")
    assert path == study and why.endswith(f"and there is no paper fit at {paper}")
    other = _write(tmp_path / "mine.json", {})
    assert choose(explicit=other) == (other, "given with --fit")
    with pytest.raises(ValueError, match=r"--fit .*nope\.json: no such file"):
        choose(explicit=tmp_path / "nope.json")
    study.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the fit JSON"):
        choose()


def test_orders_outside_the_fitted_range():
    rng = (1e18, 1e21)
    assert planner.orders_outside(1e5, rng) == pytest.approx(-13.0, abs=1e-12)  # log10(1e18 / 1e5) below
    assert planner.orders_outside(1e23, rng) == pytest.approx(2.0, abs=1e-12)  # log10(1e23 / 1e21) above
    assert planner.orders_outside(1e19, rng) == 0.0
    assert planner.orders_outside(1e18, rng) == 0.0 and planner.orders_outside(1e21, rng) == 0.0
    assert planner.orders_outside(1e19, None) is None
    assert planner.range_message(1e5, rng, 4) == (
        "C = 1e+05 FLOPs lies 13.0 orders of magnitude below the fitted compute range 1e+18 .. 1e+21 FLOPs "
        "(4 IsoFLOP budgets)"
    )
    assert "2.0 orders of magnitude above" in planner.range_message(1e23, rng)
    assert "unknown" in planner.range_message(1e19, None)
    with pytest.raises(ValueError, match="flops must be a finite positive"):
        planner.orders_outside(0.0, rng)


def test_fitted_budgets_top_level_then_approach2_entries():
    assert planner.fitted_budgets({"budgets": [1e21, 1e18, 1e19]}) == (1e18, 1e19, 1e21)
    a2 = {"approach2": {"budgets": [{"budget": 3e19}, {"budget": 1e18}, {"budget": None}]}}
    assert planner.fitted_budgets(a2) == (1e18, 3e19)
    assert planner.fitted_budgets({"budgets": [], **a2}) == (1e18, 3e19)
    assert planner.fitted_budgets(symmetric_fit() | {"budgets": []}) is None  # approach2 "budgets": []


def test_plan_records_the_range_and_notes_extrapolation():
    inside = planner.plan(symmetric_fit(), flops=1e20, **PLAN_KW)
    assert inside.fitted_range == (1e17, 1e21) and inside.orders_outside == 0.0
    assert "fitted compute range    1e+17 .. 1e+21 FLOPs (C inside)" in planner.format_plan(inside)
    above = planner.plan(symmetric_fit(), flops=1e23, **PLAN_KW)  # planned; the CLI needs --extrapolate
    assert above.orders_outside == pytest.approx(2.0)
    assert above.to_dict()["fitted_range"] == [1e17, 1e21]
    assert any(
        "2.0 orders of magnitude above the fitted compute range 1e+17 .. 1e+21" in n for n in above.notes
    )
    unknown = planner.plan({**symmetric_fit(), "budgets": None}, flops=1e20, **PLAN_KW)
    assert unknown.fitted_range is None and unknown.orders_outside is None
    assert any("fitted compute range is unknown" in n for n in unknown.notes)


def test_absurd_plans_are_refused_with_the_fix():
    # N_opt = sqrt(1e5 / 6) = 129 parameters at 1e5 FLOPs; the law reaches 1e3 at C = 6 (1e3)^2 = 6e6
    with pytest.raises(ValueError, match=r"N_opt = 129 parameters .* not a model to train .* 12\.0 orders of "
                                         r"magnitude below .*; plan at least 6e\+06 FLOPs"):  # fmt: skip
        planner.plan(symmetric_fit(), flops=1e5, **PLAN_KW)
    # with the floor lowered, the smallest shape (54,561 params) gets 1e5 / (6 * 54,561) = 0.31 tokens
    with pytest.raises(ValueError, match=r"0\.305 tokens, less than one optimizer step"):
        planner.plan(symmetric_fit(), flops=1e5, min_n_opt=1.0, **PLAN_KW)
    # a law that only reaches the floor above its fitted range says so: sqrt(1e6 / 6) = 408 parameters;
    # 1e3 parameters at 6e6 FLOPs, log10(6e6 / 1e6) = 0.8 orders above the range
    small = {**symmetric_fit(), "budgets": [1e5, 1e6]}
    with pytest.raises(ValueError, match=r"reaches 1e\+03 parameters only at 6e\+06 FLOPs, 0\.8 orders"):
        planner.plan(small, flops=1e6, **PLAN_KW)


def notebook_fit_dict() -> dict:
    """The paper's layout with the authors' notebook fit: N_opt = 1e-3 C^0.6, D_opt = (1e3 / 6) C^0.4 (so
    6 N_opt D_opt = C), L = 2 (C / 8.64e19)^-0.025; Approaches 1, 2 skipped, no Approach 3."""
    skipped = {"method": "approach2", "skipped_reason": "no isoflop runs"}
    return {
        "objective": "mlm",
        "budgets": [1e18, 1e19, 1e20, 1e21],
        "approach1": {"method": "approach1", "skipped_reason": "no curves"},
        "approach2": skipped,
        "notebook_envelope": {
            "method": "notebook_envelope",
            "objective": "mlm",
            "n_opt": {"coefficient": 1e-3, "exponent": 0.6},
            "d_opt": {"coefficient": 1e3 / 6, "exponent": 0.4},
            "loss": {"coefficient": 2.0, "exponent": -0.025},
            "loss_flops_unit": 8.64e19,
        },
        "notebook_envelope_bootstrap": {
            "method": "notebook_envelope_bootstrap",
            "samples": {"n_opt_coefficient": [0.8e-3, 1e-3, 1.2e-3], "n_opt_exponent": [0.6, 0.6, 0.6]},
        },
    }


def test_plan_with_the_authors_notebook_fit():
    assert "notebook_envelope" in planner.METHODS
    kw = {**PLAN_KW, "objective": "mlm"}
    p = planner.plan(notebook_fit_dict(), flops=1e20, method="notebook_envelope", **kw)
    # by hand: N_opt = 1e-3 * (1e20)^0.6 = 1e-3 * 1e12 = 1e9; D_opt = (1e3 / 6) * 1e8 = 1.6667e10
    assert p.method == "notebook_envelope"
    assert p.n_opt == pytest.approx(1e9, rel=1e-12)
    assert p.d_opt == pytest.approx(1e20 / 6e9, rel=1e-12)
    assert abs(math.log(p.n_params / 1e9)) < math.log(1.03)
    assert p.num_tokens == pytest.approx(1e20 / (6 * p.n_params), rel=1e-12)
    # N_opt interval from the three draws k * 1e12: 8e8, 1e9, 1.2e9
    lo, med, hi = np.percentile([8e8, 1e9, 1.2e9], [2.5, 50, 97.5])
    assert p.n_opt_interval == pytest.approx({"lo": lo, "median": med, "hi": hi}, rel=1e-12)
    assert p.predicted_loss is None  # no Approach 3 in this fit
    # the notebook's own L(C) = 2 (1e20 / 8.64e19)^-0.025 = 2 exp(-0.025 ln 1.15741) = 2 * 0.996352 = 1.99270
    assert any("notebook L(C) = 2 (C / 8.64e+19)^-0.025 gives 1.9927 at this budget" in n for n in p.notes)
    skipped = notebook_fit_dict()
    skipped["notebook_envelope"] = {"method": "notebook_envelope", "skipped_reason": "2 envelope points"}
    with pytest.raises(ValueError, match="notebook_envelope has no N_opt law in this fit: 2 envelope points"):
        planner.plan(skipped, flops=1e20, method="notebook_envelope", **kw)


def test_plan_cli_exit_codes_for_budgets_outside_the_fitted_range(tmp_path, capsys):
    from plmscale.cli import main

    fit = _write(tmp_path / "fit.json", {**symmetric_fit(), "budgets": [1e18, 1e19, 1e21]})
    base = ["plan", "--objective", "clm", "--fit", str(fit), "--method", "approach3", "--runs", str(tmp_path)]
    assert main([*base, "--flops", "1e23"]) == 3
    out = capsys.readouterr()
    assert out.out == ""
    assert (
        "C = 1e+23 FLOPs lies 2.0 orders of magnitude above the fitted compute range 1e+18 .. 1e+21"
        in out.err
    )
    assert "--extrapolate" in out.err and "given with --fit" in out.err
    assert main([*base, "--flops", "1e23", "--extrapolate"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"fit: {fit} (given with --fit)")
    assert "note: C = 1e+23 FLOPs lies 2.0 orders of magnitude above" in out.out
    assert main([*base, "--flops", "1e5"]) == 3
    assert "13.0 orders of magnitude below" in capsys.readouterr().err
    # planned anyway, the law gives 129 parameters: no model printed
    assert main([*base, "--flops", "1e5", "--extrapolate"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "not a model to train" in out.err and "plan at least 6e+06 FLOPs" in out.err
    assert main([*base, "--flops", "1e20", "--json"]) == 0
    plan_json = json.loads(capsys.readouterr().out)
    assert plan_json["orders_outside"] == 0.0 and plan_json["fit_reason"] == "given with --fit"


def test_plan_cli_picks_the_fit_and_says_why(tmp_path, capsys, monkeypatch):
    from plmscale.cli import main

    monkeypatch.chdir(tmp_path)
    base = ["plan", "--objective", "mlm", "--flops", "1e20", "--runs", "nothing"]
    assert main([*base, "--method", "notebook_envelope"]) == 2
    err = capsys.readouterr().err
    assert "results/fits/mlm.json" in err and "results/paper/fits/mlm.json" in err and "paper_figures" in err
    _write(tmp_path / "results/fits/mlm.json", {**symmetric_fit(), "objective": "mlm"})
    # the study's fit has no approach2 law and there is no paper fit: that is said first (exit 2), before
    # anything about the range (1e23 is 2 orders of magnitude above it)
    assert main(["plan", "--objective", "mlm", "--flops", "1e23", "--method", "approach2"]) == 2
    err = capsys.readouterr().err
    assert "approach2 has no N_opt law in this fit" in err and "use --method approach3" in err
    _write(tmp_path / "results/paper/fits/mlm.json", notebook_fit_dict())
    assert main([*base, "--method", "notebook_envelope"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "fit: results/paper/fits/mlm.json (the paper's logs; results/fits/mlm.json has no notebook_envelope "
        "law: the method is absent from the fit result)"
    )
    assert "(method: notebook_envelope)" in out and "N_opt   1e+09 params" in out
    assert main([*base, "--method", "approach3"]) == 0
    assert capsys.readouterr().out.startswith("fit: results/fits/mlm.json (your own study's fit)")
