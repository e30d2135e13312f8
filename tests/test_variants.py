"""Replicates, transfer runs and repetition runs of the grid (plmscale.variants, plmscale.config), the
transfer start from another run's weights (plmscale.train), and the laws on the study's own runs
(plmscale.study_laws, plmscale.fitting.seed_spread)."""

import copy
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from plmscale.config import load_study, validate_config
from plmscale.data_constrained import effective_tokens
from plmscale.fits import Approach3Result
from plmscale.fitting import seed_spread
from plmscale.flops import ModelShape
from plmscale.model import build_model
from plmscale.settings import point_settings
from plmscale.study_laws import study_repetition, study_transfer
from plmscale.train import load_init_weights

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "tests" / "config" / "config.yaml").read_text())


def config_with(**grid) -> dict:
    config = copy.deepcopy(BASE)
    config["grid"].update(grid)
    validate_config(config, REPO / "config" / "schema.yaml")
    return config


TRANSFER = {"objective": "mlm", "from": "clm", "from_flops": 3.0e8, "flops": 1.0e9, "shapes": ["a", "c"]}
REPETITION = {"objective": "clm", "flops": 1.0e9, "shape": "b", "epochs": [4, 16]}


def test_replicates_transfers_and_repetitions_become_named_points():
    config = config_with(seeds=2, transfer=[TRANSFER], repetition=[REPETITION])
    study = load_study(config)
    iso = study.isoflop_points()
    assert len(iso) == 2 * 2 * 3 * 2  # objectives x budgets x shapes x seeds
    assert {p.run_id for p in iso if p.replicate == 1} >= {"clm/3e8/a-s1", "mlm/1e9/c-s1"}
    transfers = study.transfer_points()
    assert [p.run_id for p in transfers] == ["mlm/1e9/a-from-clm3e8", "mlm/1e9/c-from-clm3e8"]
    assert transfers[0].init_from == "clm/3e8/a" and transfers[0].total_flops == 1.3e9
    reps = study.repetition_points()
    assert [p.run_id for p in reps] == ["clm/1e9/b-x4", "clm/1e9/b-x16"]
    alone = load_study(config_with(repetition=[{**REPETITION, "source": "curated"}])).repetition_points()
    assert [p.run_id for p in alone] == ["clm/1e9/b-curated-x4", "clm/1e9/b-curated-x16"]
    assert reps[0].unique_tokens == int(reps[0].num_tokens / 4)
    assert study.point("clm", "1e9", "b-x16") == reps[1]
    # the run settings: seed offset, the source weights and the 5% warm-up, the cap
    assert point_settings(config, iso[1]).seed == config["train"]["seed"] + 1
    settings = point_settings(config, transfers[1])
    assert settings.init_from == "results/runs/clm/3e8/c/model" and settings.warmup_fraction == 0.05
    assert settings.objective == "mlm" and settings.flops_budget == 1e9
    assert point_settings(config, reps[1]).unique_tokens == reps[1].unique_tokens
    assert point_settings(config, iso[0]).init_from is None


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"transfer": [{**TRANSFER, "from": "mlm"}]}, r"objective and from are both 'mlm'"),
        ({"transfer": [{**TRANSFER, "shapes": ["zz"]}]}, r"grid.transfer\[0\]: shape 'zz' is not defined"),
        ({"repetition": [{**REPETITION, "shape": "zz"}]}, r"grid.repetition\[0\]: shape 'zz' is not defined"),
        ({"repetition": [{**REPETITION, "source": "ur50"}]}, r"grid.repetition\[0\].source: 'ur50' is not a"),
    ],
)
def test_variants_that_cannot_run_are_refused(grid, message):
    with pytest.raises(ValueError, match=message):
        load_study(config_with(**grid))


def test_sources_and_references_off_the_grid_are_trained_as_support_runs():
    transfer = {**TRANSFER, "from_flops": 6.0e8, "flops": 2.0e9, "shapes": ["a"]}
    study = load_study(config_with(transfer=[transfer], repetition=[{**REPETITION, "flops": 3.0e9}]))
    support = {p.run_id for p in study.support_points()}
    assert support == {"clm/6e8/a", "mlm/2e9/a", "clm/3e9/b"}
    assert not support & {p.run_id for p in study.isoflop_points()}
    assert {p.run_id for p in study.points()} >= support | {"mlm/2e9/a-from-clm6e8", "clm/3e9/b-x4"}
    # on the grid, nothing extra is trained
    assert load_study(config_with(transfer=[TRANSFER], repetition=[REPETITION])).support_points() == []


def test_a_shape_named_like_a_variant_is_refused():
    config = config_with()
    config["grid"]["shapes"]["b-s1"] = config["grid"]["shapes"]["b"]
    with pytest.raises(ValueError, match=r"grid.shapes.b-s1: a shape name must not end like"):
        load_study(config)


def test_epochs_of_one_or_less_are_refused_by_the_schema():
    with pytest.raises(ValueError, match=r"grid.repetition.0.epochs.0"):
        config_with(repetition=[{**REPETITION, "epochs": [1]}])


def test_transfer_start_loads_the_other_objectives_weights(tmp_path):
    shape = ModelShape(layers=1, width=16, heads=2)
    source = build_model(shape, "clm", 32, seed=3)
    source.save_pretrained(tmp_path / "clm")
    target = build_model(shape, "mlm", 32, seed=4)
    digest = load_init_weights(target, tmp_path / "clm")
    assert digest == hashlib.sha256((tmp_path / "clm" / "model.safetensors").read_bytes()).hexdigest()
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name
    # the tied output projection follows the loaded embeddings
    assert torch.equal(
        target.lm_head.decoder.weight, source.roberta_prelayernorm.embeddings.word_embeddings.weight
    )
    with pytest.raises(FileNotFoundError, match="no final weights"):
        load_init_weights(target, tmp_path / "missing")
    with pytest.raises(ValueError, match="do not fit this run's shape"):
        load_init_weights(
            build_model(ModelShape(layers=1, width=32, heads=2), "mlm", 32, seed=0), tmp_path / "clm"
        )


def test_seed_spread_by_hand():
    runs = pl.DataFrame(
        {
            "flops_budget": [1e9, 1e9, 1e9, 1e9, 3e9],
            "n_params": [10, 10, 20, 20, 10],
            "val_loss": [2.0, 2.1, 3.0, 3.4, 2.5],
        }
    )
    spread = seed_spread(runs)
    # sd of (2.0, 2.1) = 0.0707, of (3.0, 3.4) = 0.2828; the 3e9 point has one seed and does not count
    assert spread["n_points"] == 2 and spread["seeds_per_point"] == 2
    assert spread["median_sd"] == pytest.approx((0.1 / math.sqrt(2) + 0.4 / math.sqrt(2)) / 2)
    assert spread["max_range"] == pytest.approx(0.4) and spread["median_range"] == pytest.approx(0.25)
    assert seed_spread(runs.filter(pl.col("flops_budget") == 3e9))["n_points"] == 0


def _write_run(root: Path, run_id: str, done: dict, curve: list[tuple[float, float]] | None = None) -> dict:
    path = root / run_id
    path.mkdir(parents=True, exist_ok=True)
    (path / "done.json").write_text(json.dumps({"run_id": run_id, **done}))
    out = {"done": str(path / "done.json")}
    if curve is not None:
        pl.DataFrame({"num_tokens": [t for t, _ in curve], "val_loss": [v for _, v in curve]}).write_parquet(
            path / "metrics.parquet"
        )
        out["metrics"] = str(path / "metrics.parquet")
    return out


def test_transfer_law_on_own_runs_by_hand(tmp_path):
    """Scratch curves L = 3 - 0.5 log10(D/1e3) reach any loss at a known D; the transferred run of size N
    is ahead by a known factor, so D_t = D_scratch(L) - D_F is known at every point."""
    tokens = np.geomspace(1e3, 1e6, 16)

    def scratch_loss(d):
        return 3.0 - 0.5 * np.log10(d / 1e3)

    runs = []
    for shape, n_params, gain in (("a", 1e4, 2.0), ("b", 3e4, 3.0), ("c", 1e5, 5.0)):
        # the transferred run at D_F has the loss the scratch run has at gain * D_F
        transfer = [(d, float(scratch_loss(gain * d))) for d in tokens]
        scratch = [(d, float(scratch_loss(d))) for d in np.geomspace(1e3, 8e6, 40)]  # reaches every target
        common = {"objective": "mlm", "n_params_non_embedding": n_params, "flops_budget": 1e9, "flops": 1e9}
        source = f"results/runs/clm/3e8/{shape}/model"
        done = {**common, "init_from": source, "final_val_loss": 1.0}
        run = _write_run(tmp_path, f"mlm/1e9/{shape}-from-clm3e8", done, transfer)
        base = _write_run(tmp_path, f"mlm/1e9/{shape}", {**common, "final_val_loss": 1.1}, scratch)
        runs.append({**run, "scratch_done": base["done"], "scratch_metrics": base["metrics"]})
    result, rows = study_transfer(runs, n_points=5)
    assert result["clm"]["skipped_reason"] == "no transfer runs evaluated on clm"
    entry = result["mlm"]
    assert entry["sizes"] == ["a @ 1e+09", "b @ 1e+09", "c @ 1e+09"]
    for row in rows:
        gain = {1e4: 2.0, 3e4: 3.0, 1e5: 5.0}[row["n_params"]]
        assert row["status"] == "ok"
        assert row["transferred_tokens"] == pytest.approx((gain - 1) * row["finetune_tokens"], rel=1e-6)
    # D_t = (g - 1) D_F: alpha = -1 exactly (D_t grows with D_F as D_F^1)
    assert entry["law"]["alpha"] == pytest.approx(-1.0, abs=1e-6)
    assert entry["law"]["beta"] > 0  # the larger models gained more
    compute = {r["run"]: r for r in result["runs"]}
    assert compute["mlm/1e9/a-from-clm3e8"]["source_flops"] == 3e8
    assert compute["mlm/1e9/a-from-clm3e8"]["total_flops"] == pytest.approx(1.3e9)


def test_repetition_law_recovers_a_known_r_star(tmp_path):
    """Final losses made from L(N, D') with D' of Muennighoff et al. at R_D* = 5: the fit on top of the
    same base law returns 5, and the interval over base-law draws contains it."""
    base = {"E": 1.5, "A": 40.0, "B": 300.0, "alpha": 0.3, "beta": 0.35}
    a3 = Approach3Result(**base, objective=0.0, huber_delta=1e-3, n_points=9, n_starts=1, n_failed=0,
                         failure_messages=(), best_converged=True, best_message="ok", n_opt=None, d_opt=None,
                         law_reason=None)  # fmt: skip
    rng = np.random.default_rng(0)
    draws = {k: list(v * np.exp(rng.normal(0, 0.002, 30))) for k, v in base.items()}
    fit = {"objective": "clm", "approach3": a3.to_dict(), "approach3_bootstrap": {"samples": draws}}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    n, d = 3e4, 2e6
    runs = []
    for epochs in (1.0, 4.0, 16.0, 64.0):
        u = d / epochs
        loss = a3.E + a3.A / n**a3.alpha + a3.B / effective_tokens(d, u, 5.0) ** a3.beta
        name = "b" if epochs == 1 else f"b-x{epochs:g}"
        done = {"objective": "clm", "n_params_non_embedding": n, "num_tokens": d, "epochs": epochs,
                "unique_tokens": None if epochs == 1 else int(u)}  # fmt: skip
        run = _write_run(tmp_path, f"clm/1e9/{name}", done)
        (tmp_path / f"{name}.eval.json").write_text(json.dumps({"val_loss": float(loss)}))
        runs.append({**run, "eval": str(tmp_path / f"{name}.eval.json")})
    result = study_repetition(runs, tmp_path / "fit.json")
    assert result["law"]["r_star_d"] == pytest.approx(5.0, rel=1e-4)
    for run in result["runs"]:  # the law with the recovered R_D* gives back every loss it was made from
        assert run["predicted_val_loss"] == pytest.approx(run["val_loss"], rel=1e-6)
    ci = result["interval"]["r_star_d"]
    assert ci["lo"] < 5.0 < ci["hi"] and result["interval"]["n_draws"] == 30
    assert [r["capped"] for r in result["runs"]] == [False, True, True, True]
    # without an Approach 3 law there is nothing to build on: said, not hidden
    (tmp_path / "fit.json").write_text(json.dumps({"objective": "clm", "approach3": {"skipped_reason": "x"}}))
    assert study_repetition(runs, tmp_path / "fit.json")["skipped_reason"].startswith("no Approach 3 law")


def test_summary_prints_intervals_caveats_and_the_noise_floor():
    from plmscale.cli import format_summary

    info = {
        "n_runs": 12, "training_seconds": 3.0, "throughput": [],
        "best_run": {"val_loss": 2.5, "n_params": 1000, "num_tokens": 5000},
        "exponents": {
            "approach1": {"n_opt_exponent": 0.5, "n_opt_exponent_ci": [0.41, 0.62], "d_opt_exponent": 0.5},
            "approach2": {"skipped": "2 of 3 budgets have their minimum at the grid edge"},
            "approach3": {"n_opt_exponent": 0.9, "n_opt_exponent_ci": None, "d_opt_exponent": 0.1,
                          "caveat": "did not converge (ABNORMAL)"},
        },
        "seed_spread": {"n_points": 6, "seeds_per_point": 2, "median_sd": 0.01234, "max_range": 0.05},
        "extrapolation": {
            "approach2": {"skipped": "1 usable budget"},
            "approach3": [{"budget": 3e11, "n_opt_ratio": 1.25, "loss_relative_error": -0.012}],
        },
    }  # fmt: skip
    lines = format_summary({"clm": info}).splitlines()
    assert "  approach1: N_opt ~ C^0.500 [95% 0.410, 0.620], D_opt ~ C^0.500" in lines
    assert "  approach2: not fitted: 2 of 3 budgets have their minimum at the grid edge" in lines
    assert "  approach3: N_opt ~ C^0.900, D_opt ~ C^0.100  CAVEAT: did not converge (ABNORMAL)" in lines
    assert (
        "  noise floor over 2 seeds at 6 points: median sd 0.0123, largest range 0.0500 nats/token" in lines
    )
    assert "  extrapolation (approach2): not checked: 1 usable budget" in lines
    assert (
        "  extrapolation (approach3) to 3e+11 FLOPs: predicted/observed N_opt 1.25, loss error -1.2%" in lines
    )
    info["extrapolation"] = {"skipped": "2 budget(s); the check needs at least 3"}
    lines = format_summary({"clm": info}).splitlines()
    assert "  extrapolation (all methods): not checked: 2 budget(s); the check needs at least 3" in lines
