"""A real Snakemake study with replicate seeds, CLM->MLM transfer runs and data-repetition runs: the runs,
their settings as trained, the noise floor, the transfer law and the data-constrained law."""

import hashlib
import json

import polars as pl
import pytest
import yaml

from tests.test_workflow import TEST_CONFIG, planned_jobs, snakemake

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def variants_study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("variants")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["downstream"]["enabled"] = False
    config["hwbench"]["enabled"] = False
    config["grid"].update(
        seeds=2,
        transfer=[
            {
                "objective": "mlm",
                "from": "clm",
                "from_flops": 3.0e8,
                "flops": 1.0e9,
                "shapes": ["a", "b", "c"],
            }
        ],
        repetition=[
            {"objective": "clm", "flops": 1.0e9, "shape": "b", "epochs": [4]},
            {"objective": "clm", "flops": 1.0e9, "shape": "b", "epochs": [16], "source": "curated"},
        ],
    )
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake(workdir, "--cores", "2", config=path)
    return workdir, path, config


def _done(workdir, run_id):
    return json.loads((workdir / "results/runs" / run_id / "done.json").read_text())


def test_replicates_use_their_own_seed_and_give_a_noise_floor(variants_study):
    workdir, _, _ = variants_study
    first, second = _done(workdir, "clm/1e9/b"), _done(workdir, "clm/1e9/b-s1")
    assert second["settings"]["seed"] == first["settings"]["seed"] + 1
    assert first["final_val_loss"] != second["final_val_loss"]
    for objective in ("clm", "mlm"):
        fit = json.loads((workdir / f"results/fits/{objective}.json").read_text())
        assert fit["n_runs"] == 12  # 2 budgets x 3 shapes x 2 seeds; transfer and repetition runs stay out
        spread = fit["seed_spread"]
        assert spread["n_points"] == 6 and spread["seeds_per_point"] == 2
        runs = pl.read_parquet(workdir / f"results/fits/{objective}_runs.parquet")
        pair = runs.filter((pl.col("flops_budget") == 1e9) & (pl.col("n_params") == runs["n_params"].max()))
        assert max(p["hi"] - p["lo"] for p in spread["points"]) == pytest.approx(spread["max_range"])
        assert pair["val_loss"].max() - pair["val_loss"].min() <= spread["max_range"] + 1e-12


def test_transfer_runs_start_from_the_source_weights(variants_study):
    workdir, _, _ = variants_study
    for shape in "abc":
        done = _done(workdir, f"mlm/1e9/{shape}-from-clm3e8")
        source = workdir / f"results/runs/clm/3e8/{shape}/model/model.safetensors"
        assert done["init_from"] == f"results/runs/clm/3e8/{shape}/model"
        assert done["init_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert done["settings"]["warmup_fraction"] == 0.05
        # a trained start: the first logged validation loss is below the from-scratch run's
        transfer = pl.read_parquet(workdir / f"results/runs/mlm/1e9/{shape}-from-clm3e8/metrics.parquet")
        scratch = pl.read_parquet(workdir / f"results/runs/mlm/1e9/{shape}/metrics.parquet")
        first = [f.filter(pl.col("val_loss").is_not_null())["val_loss"][0] for f in (transfer, scratch)]
        assert first[0] < first[1]
    law = json.loads((workdir / "results/fits/transfer_law.json").read_text())
    assert law["mlm"]["sizes"] == ["a @ 1e+09", "b @ 1e+09", "c @ 1e+09"]
    entry = law["mlm"]
    assert entry["n_fitted"] + entry["n_not_reached"] + entry["n_no_gain"] == entry["n_points"] > 0
    assert "law" in entry or "skipped_reason" in entry
    runs = {r["run"]: r for r in law["runs"]}
    assert runs["mlm/1e9/a-from-clm3e8"]["total_flops"] == pytest.approx(1.3e9, rel=1e-3)  # 6ND: whole steps
    assert (workdir / "results/figures/transfer_law.png").read_bytes()[:4] == b"\x89PNG"


def test_repetition_runs_train_on_capped_data(variants_study):
    workdir, _, config = variants_study
    reference = _done(workdir, "clm/1e9/b")
    for epochs, name in ((4, "b-x4"), (16, "b-curated-x16")):
        done = _done(workdir, f"clm/1e9/{name}")
        assert done["num_tokens"] == reference["num_tokens"]  # same budget, same shape
        cap = done["settings"]["unique_tokens"]
        assert cap == int(done["flops_budget"] / (6 * done["n_params_non_embedding"]) / epochs)
        # whole documents are kept: at least the cap, less than one context more
        assert cap <= done["unique_tokens"] < cap + config["train"]["context"]
        assert done["epochs"] == pytest.approx(done["num_tokens"] / done["unique_tokens"])
        assert done["epochs"] > epochs * 0.9
    result = json.loads((workdir / "results/fits/clm_repetition.json").read_text())
    assert sorted(r["run"] for r in result["runs"]) == ["clm/1e9/b", "clm/1e9/b-curated-x16", "clm/1e9/b-x4"]
    # the one-source run trains on that source alone (the paper's Figure 1), the others on the mix
    sources = {r["run"]: r["sources"] for r in result["runs"]}
    assert sources["clm/1e9/b-curated-x16"] == ["curated"]
    assert sources["clm/1e9/b-x4"] == sources["clm/1e9/b"] == ["curated", "metagenomic"]
    assert "law" in result or "skipped_reason" in result
    assert (workdir / "results/figures/clm_repetition.png").read_bytes()[:4] == b"\x89PNG"


def test_a_second_run_plans_nothing(variants_study):
    workdir, path, _ = variants_study
    assert planned_jobs(snakemake(workdir, "-n", config=path).stdout) == []
