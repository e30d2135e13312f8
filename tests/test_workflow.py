"""The real workflow under Snakemake: a tiny end-to-end run, the rerun contract, config errors and a dry
run of the full-scale paper grid.  Every Snakemake call runs in a subprocess with a hard timeout."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "tests" / "config" / "config.yaml"

pytestmark = pytest.mark.e2e


def snakemake(workdir: Path, *args: str, config: Path = TEST_CONFIG, timeout: int = 1200, check: bool = True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(config), *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        w = re.search(r"wildcards: (.*)", block)
        wildcards = dict(kv.split("=", 1) for kv in w.group(1).split(", ")) if w else {}
        jobs.append((m.group(1), wildcards))
    return jobs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    snakemake(workdir, "--cores", "2")
    return workdir


def test_every_stage_produced_real_outputs(study):
    for objective in ("clm", "mlm"):
        fits = json.loads((study / f"results/fits/{objective}.json").read_text())
        assert set(fits) >= {"approach1", "approach2", "approach3"}
        assert fits["n_runs"] == 6
        for fig in ("isoflop", "optimal_allocation", "loss_vs_compute", "learning_curves"):
            assert (study / f"results/figures/{objective}_{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert b"<svg" in (study / f"results/figures/{objective}_{fig}.svg").read_bytes()[:2000]
        runs = pl.read_parquet(study / f"results/fits/{objective}_runs.parquet")
        assert runs.height == 6
        # every loss is below the uniform-over-vocabulary loss ln(33) = 3.497 nats: the models learned
        assert runs["val_loss"].max() < 3.4
        # C = 6 N D holds for every run
        assert ((runs["flops"] - 6 * runs["n_params"] * runs["num_tokens"]).abs() < 1).all()
    assert (study / "results/figures/downstream_compute.png").read_bytes()[:4] == b"\x89PNG"
    table = pl.read_csv(study / "results/downstream/results.csv")
    assert table.height == 6 and set(table["dataset"]) == {"proxy"} and set(table["method"]) == {"frozen"}
    assert (table["test_accuracy_lo"] <= table["test_accuracy"]).all()
    assert (table["test_accuracy"] <= table["test_accuracy_hi"]).all()
    # each run's budget is its pre-training compute on the figure's x axis
    runs = pl.read_parquet(study / "results/fits/mlm_runs.parquet")
    assert sorted(table["pretrain_flops"]) == sorted(runs["flops_budget"])
    # the hardware benchmark on an own run: inference with its frozen classifier, fine-tuning on 1 process
    inference = pl.read_csv(study / "results/hwbench/inference.csv")
    assert inference.height == 2 and (inference["n_sequences"] == 40).all()
    finetune = pl.read_csv(study / "results/hwbench/finetune.csv")
    assert finetune["n_devices"].to_list() == [1] and finetune["scaling_efficiency"].to_list() == [1.0]


@pytest.mark.parametrize(
    ("objective", "auto"), [("clm", AutoModelForCausalLM), ("mlm", AutoModelForMaskedLM)]
)
def test_saved_runs_load_with_the_auto_classes(study, objective, auto):
    model = auto.from_pretrained(study / f"results/runs/{objective}/1e9/b/model")
    done = json.loads((study / f"results/runs/{objective}/1e9/b/done.json").read_text())
    assert (
        sum(p.numel() for p in model.parameters())
        == done["n_params_non_embedding"] + done["n_params_embedding"]
    )


def test_validation_report_accounts_for_every_record(study):
    import importlib.resources

    shipped = importlib.resources.files("pyhmmer") / "tests/data/seqs/938293.PRJEB85.HG003687.faa"
    text = shipped.read_text()
    stops = sum(1 for block in text.split(">")[1:] if "".join(block.split("\n")[1:]).endswith("*"))
    report = json.loads((study / "results/validate/curated.report.json").read_text())
    assert report["n_records"] == text.count(">") == 2100
    assert report["changed_by_reason"] == {"terminal_stop": stops}
    assert report["n_kept"] + report["n_dropped"] == report["n_records"]


def test_no_cluster_spans_two_splits_and_tokens_cover_each_split(study):
    table = pl.read_parquet(study / "results/split/assignments.parquet")
    per_cluster = table.group_by("representative").agg(pl.col("split").n_unique())
    assert per_cluster["split"].max() == 1
    for split in ("train", "valid"):  # the test split feeds only the downstream probe, as FASTA
        for source in ("curated", "metagenomic"):
            text = (study / f"results/split/{split}/{source}.fasta").read_text().splitlines()
            n_seq = sum(1 for s in text if s.startswith(">"))
            assert all(s[1:].startswith(f"{source}:") for s in text if s.startswith(">"))
            residues = sum(len(s) for s in text if not s.startswith(">"))
            manifests = [
                json.loads(p.read_text())
                for p in sorted((study / f"results/tokens/{split}/{source}").glob("*/manifest.json"))
            ]
            # train: tokenize.shards (2); valid (5% against train's 90%): ceil(2 * 0.05 / 0.9) = 1 shard
            assert len(manifests) == {"train": 2, "valid": 1}[split]
            of_source = pl.col("member").str.starts_with(f"{source}:")
            in_table = table.filter((pl.col("split") == split) & of_source)
            assert sum(m["num_sequences"] for m in manifests) == n_seq == in_table.height
            assert sum(m["num_tokens"] for m in manifests) == residues + 2 * n_seq


def test_runs_mix_the_sources_by_their_configured_proportions(study):
    config = yaml.safe_load(TEST_CONFIG.read_text())
    proportions = {name: spec["proportion"] for name, spec in config["sources"].items()}
    for done_path in sorted(study.glob("results/runs/*/*/*/done.json"))[:3]:
        done = json.loads(done_path.read_text())
        uses = {u["name"]: u for u in done["sources"]}
        assert {n: u["proportion"] for n, u in uses.items()} == proportions
        total = sum(u["rows"] for u in uses.values())
        assert total == done["num_steps"] * done["settings"]["batch_rows"]
        for name, use in uses.items():
            assert abs(use["rows"] - proportions[name] * total) <= 1


def test_second_run_plans_nothing_and_report_builds(study):
    proc = snakemake(study, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    snakemake(study, "--report", str(study / "report.html"))
    html = (study / "report.html").read_text(errors="ignore")
    assert "isoflop" in html and len(html) > 100_000


def _dry_run_with(study: Path, tmp_path: Path, edit) -> list[tuple[str, dict[str, str]]]:
    config = yaml.safe_load(TEST_CONFIG.read_text())
    edit(config)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(study, "-n", config=path)
    return planned_jobs(proc.stdout)


def test_plot_setting_reruns_only_plots(study, tmp_path):
    jobs = _dry_run_with(study, tmp_path, lambda c: c["plots"].update(dpi=61))
    # and the landing page, which quotes the figures' facts (<figure>.json)
    assert {rule for rule, _ in jobs} == {
        "plot_objective", "plot_downstream", "plot_hwbench", "report_landing", "all"
    }  # fmt: skip


def test_downstream_learning_rate_reruns_only_those_classifiers_and_what_reads_them(study, tmp_path):
    jobs = _dry_run_with(study, tmp_path, lambda c: c["downstream"]["lr"].update(frozen=0.02))
    assert {w["model"] for rule, w in jobs if rule == "finetune"} == {
        f"mlm_{b}_{s}" for b in ("3e8", "1e9") for s in "abc"
    }
    assert {w["method"] for rule, w in jobs if rule == "finetune"} == {"frozen"}  # a job per (method, model)
    # the benchmark's inference uses the frozen classifier's head; its fine-tuning does not
    assert {rule for rule, _ in jobs} == {
        "finetune", "downstream_table", "plot_downstream", "hwbench_infer_cpu", "hwbench_table",
        "plot_hwbench", "report_landing", "all",
    }  # fmt: skip


def test_mlm_hyperparameter_reruns_only_mlm_runs_and_their_dependents(study, tmp_path):
    jobs = _dry_run_with(study, tmp_path, lambda c: c["train"]["mlm"].update(mask_ratio=0.2))
    trained = {(w["objective"], w["budget"], w["shape"]) for rule, w in jobs if rule == "train"}
    assert trained == {("mlm", b, s) for b in ("3e8", "1e9") for s in "abc"}
    assert all(
        w.get("objective", "mlm") == "mlm"
        for rule, w in jobs
        if rule in {"evaluate", "fit", "plot_objective"}
    )
    assert not any(
        rule in {"embedded_source", "validate", "cluster", "split", "tokenize"} for rule, _ in jobs
    )


def test_one_shapes_learning_rate_reruns_only_that_shape(study, tmp_path):
    jobs = _dry_run_with(study, tmp_path, lambda c: c["grid"]["shapes"]["b"].update(lr=0.004))
    trained = {(w["objective"], w["budget"], w["shape"]) for rule, w in jobs if rule == "train"}
    assert trained == {(o, b, "b") for o in ("clm", "mlm") for b in ("3e8", "1e9")}


def test_execution_settings_and_launcher_rerun_nothing(study, tmp_path):
    """Device, kernels, micro-batching, parallelism, compile, logging, checkpoint cadence and the launcher
    change how a run executes, not its numbers: a dry run plans nothing."""
    execution = {
        "device": "cpu", "attention": "varlen", "micro_batch_rows": 4, "parallel": "fsdp", "compile": True,
        "activation_checkpointing": True, "log_every": 3, "checkpoint_every": 7, "prefetch_steps": 0,
        "launcher": "torchrun --standalone --nproc_per_node={devices}", "fused_adamw": False,
        "on_input_change": "restart", "peak_flops": 1.0e12,
    }  # fmt: skip
    jobs = _dry_run_with(study, tmp_path, lambda c: c["train"].update(execution))
    assert jobs == []


def test_precision_reruns_every_training_run(study, tmp_path):
    jobs = _dry_run_with(study, tmp_path, lambda c: c["train"].update(precision="bf16"))
    trained = {(w["objective"], w["budget"], w["shape"]) for rule, w in jobs if rule == "train"}
    assert trained == {(o, b, s) for o in ("clm", "mlm") for b in ("3e8", "1e9") for s in "abc"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["train"].update(learning_rate=0.1),
            r"config key train: Additional properties .*'learning_rate'",
        ),
        (lambda c: c["cluster"].update(method="cdhit"), r"config key cluster.method: 'cdhit' is not one of"),
        (lambda c: c["grid"]["budgets"][0].update(flops=1e3), r"impossible grid point clm/1e3/a"),
        (lambda c: c["hwbench"].update(model="esm9"), r"hwbench.model 'esm9' is not a downstream model"),
        (lambda c: c["downstream"].update(devices=2), r"downstream.devices = 2 needs a launcher"),
        (
            lambda c: c["downstream"]["datasets"].update(
                loc={"files": {"train": "x.csv"}, "classes": ["a", "b"]}
            ),
            r"downstream.datasets.loc.files",
        ),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, edit, message):
    config = yaml.safe_load(TEST_CONFIG.read_text())
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path / "wd", "--cores", "1", config=path, check=False, timeout=120)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr)
    assert not (tmp_path / "wd" / "results").exists() and not (tmp_path / "wd" / "resources").exists()


def test_paper_config_dry_run_lists_the_full_grid(tmp_path):
    sys.path.insert(0, str(REPO / "workflow"))
    from plmscale.config import load_study, read_yaml, validate_config

    config = read_yaml(REPO / "config" / "paper.yaml")
    validate_config(config, REPO / "config" / "schema.yaml")
    study = load_study(config)
    points = study.points()
    assert len(study.isoflop_points()) == 2 * (7 + 7 + 8 + 9 + 9 + 7 + 7)
    # the paper's 10 transfer runs, and the 7 source runs off the IsoFLOP budgets they start from
    assert len(study.transfer_points()) == 10 and len(study.support_points()) == 7
    assert "mlm/3e19/s85m-from-clm5.2e18" in {p.run_id for p in points}
    proc = snakemake(tmp_path, "-n", config=REPO / "config" / "paper.yaml", timeout=300)
    jobs = planned_jobs(proc.stdout)
    trained = {(w["objective"], w["budget"], w["shape"]) for rule, w in jobs if rule == "train"}
    assert trained == {(p.objective, p.budget, p.name) for p in points}
    assert ("transfer_law", {}) in jobs
    assert ("mlm", "1e21", "s7.2b") in trained
    resources = _train_resources(proc.stdout)
    # the paper's batch: 0.5M tokens per step below 1B parameters, 1M from 1B up
    small, big = resources[("mlm", "1e18", "s10m")], resources[("mlm", "1e21", "s7.2b")]
    assert (small["devices"], small["gpu"]) == (1, 1) and (big["devices"], big["gpu"]) == (8, 8)
    assert big["mem_mb"] >= 256_000 and small["runtime"] >= 60 and big["runtime"] == 2880


def test_a_300_run_grid_builds_its_dag(tmp_path):
    """The paper trained over 300 models: a 2 objectives x 10 budgets x 15 shapes grid plans every run, and
    the dry run's wall time is printed (a speed target lives in the README, not in this test)."""
    sys.path.insert(0, str(REPO / "workflow"))
    from plmscale.config import flops_label

    config = yaml.safe_load(TEST_CONFIG.read_text())
    shapes = {f"w{width}l{layers}": {"layers": layers, "width": width, "heads": 2}
              for width in (16, 24, 32, 40, 48) for layers in (1, 2, 3)}  # fmt: skip
    budgets = [float(f"{m}e{e}") for e in (9, 10, 11, 12, 13) for m in (1, 3)]
    config["grid"].update(shapes=shapes, budgets=[{"flops": b, "shapes": sorted(shapes)} for b in budgets])
    config["hwbench"] = {"enabled": False}
    path = tmp_path / "grid300.yaml"
    path.write_text(yaml.safe_dump(config))
    t0 = time.monotonic()
    proc = snakemake(tmp_path, "-n", config=path, timeout=600)
    took = time.monotonic() - t0
    jobs = planned_jobs(proc.stdout)
    trained = {(w["objective"], w["budget"], w["shape"]) for rule, w in jobs if rule == "train"}
    assert len(trained) == 2 * 10 * 15
    assert {b for _, b, _ in trained} == {flops_label(b) for b in budgets}
    assert sum(rule == "evaluate" for rule, _ in jobs) == 300
    print(f"\n300-run grid: {len(jobs)} jobs planned, dry run {took:.1f} s")


def _train_resources(output: str) -> dict[tuple[str, str, str], dict[str, int]]:
    """Resources of every train job of a dry run, by (objective, budget, shape)."""
    found = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        if block.strip().startswith("rule train:"):
            w = dict(kv.split("=", 1) for kv in re.search(r"wildcards: (.*)", block).group(1).split(", "))
            res = re.search(r"resources: (.*)", block).group(1)
            values = dict(kv.split("=", 1) for kv in res.split(", "))
            found[(w["objective"], w["budget"], w["shape"])] = {
                k: int(values[k]) for k in ("devices", "gpu", "mem_mb", "runtime")
            }
    return found


def _config_with_url_source(tmp_path: Path, checksum: str) -> Path:
    fasta = tmp_path / "extra.fasta"
    if not fasta.exists():
        fasta.write_text(">x1\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ*\n>x2\nMEEPQSDPSVEPPLSQETFSDLWKLLPENNV\n")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["sources"]["extra"] = {"kind": "url", "url": f"file://{fasta}", "sha256": checksum}
    # proportions are all-or-none: this test is about the download, so the sources are concatenated
    for source in config["sources"].values():
        source.pop("proportion", None)
    path = tmp_path / f"url-{checksum[:6]}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_url_source_is_downloaded_verified_and_validated(tmp_path):
    import hashlib

    body = b">x1\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ*\n>x2\nMEEPQSDPSVEPPLSQETFSDLWKLLPENNV\n"
    (tmp_path / "extra.fasta").write_bytes(body)
    good = _config_with_url_source(tmp_path, hashlib.sha256(body).hexdigest())
    wd = tmp_path / "wd"
    snakemake(wd, "--cores", "1", "results/validate/extra.fasta", config=good, timeout=300)
    assert (wd / "resources/download/extra.fasta").read_bytes() == body
    report = json.loads((wd / "results/validate/extra.report.json").read_text())
    assert (report["n_kept"], report["changed_by_reason"]) == (2, {"terminal_stop": 1})

    bad = _config_with_url_source(tmp_path, "0" * 64)
    wd2 = tmp_path / "wd2"
    target = "resources/download/extra.fasta"
    proc = snakemake(wd2, "--cores", "1", target, config=bad, check=False, timeout=300)
    assert proc.returncode != 0
    assert "checksum mismatch" in (wd2 / "logs/download/extra.log").read_text()
    assert not (wd2 / "resources/download/extra.fasta").exists()
    assert not (wd2 / "resources/download/extra.fasta.part").exists()
