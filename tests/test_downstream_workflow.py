"""The downstream stage and the hardware benchmark under the real Snakemake, end to end on the CPU.

Two ProtST-format data sets (a Parquet with space-separated residues, a CSV with pandas' ``Unnamed: 0``
index column) are served by a real HTTP server on 127.0.0.1; the models are two MLM runs of a tiny grid and a
tiny ESM-2 checkpoint built with the real Hugging Face classes; the methods are frozen and full; the
benchmark measures inference and fine-tuning with 1 and 2 processes (gloo)."""

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from plmscale.fasta import read_fasta
from plmscale.sources import materialise_embedded

from tests.downstream_kit import synthetic_sequences, tiny_esm
from tests.test_workflow import TEST_CONFIG, snakemake

pytestmark = pytest.mark.e2e
SIZES = {"train": 48, "valid": 16, "test": 24}
SUBCELLULAR_CLASSES = ["Cell membrane", "Cytoplasm", "Nucleus"]


def _spaced(seqs):
    return [" ".join(s) for s in seqs]


def _fixtures(folder: Path, planted: list[str]) -> None:
    """subcellular: Parquet per split (3 classes); binary: CSV per split with planted pre-training
    proteins at the start of its test split."""
    folder.mkdir(parents=True)
    for k, (split, n) in enumerate(SIZES.items()):
        seqs, labels = synthetic_sequences(n, 3, seed=10 + k)
        pl.DataFrame({"prot_seq": _spaced(seqs), "localization": labels}).write_parquet(
            folder / f"subcellular_{split}.parquet"
        )
        seqs, labels = synthetic_sequences(n, 2, seed=20 + k)
        if split == "test":
            seqs = planted + seqs[len(planted) :]
        frame = pl.DataFrame({"Unnamed: 0": np.arange(n), "prot_seq": _spaced(seqs), "localization": labels})
        frame.write_csv(folder / f"binary-localization_{split}.csv")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    proteome = root / "proteome.fasta"
    materialise_embedded("pyhmmer_proteome", proteome)
    planted = [r.sequence.rstrip("*") for r in read_fasta(proteome) if 60 <= len(r.sequence) <= 300][:8]
    _fixtures(root / "files", planted)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root / "files"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root / "files", planted
    httpd.shutdown()


def _config(tmp: Path, base_url: str, esm: Path, devices=("cpu",)) -> Path:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["grid"].update({"objectives": ["mlm"], "budgets": [{"flops": 3.0e8, "shapes": ["a", "b"]}]})
    files = {
        "subcellular": {s: {"url": f"{base_url}/subcellular_{s}.parquet"} for s in SIZES},
        "binary": {s: {"url": f"{base_url}/binary-localization_{s}.csv"} for s in SIZES},
    }
    cfg["downstream"].update(
        {
            "methods": ["frozen", "full"],
            "datasets": {
                "subcellular": {
                    "files": files["subcellular"],
                    "classes": SUBCELLULAR_CLASSES,
                    "expected_counts": {"train": 48, "valid": 16, "test": 25},
                },
                "binary": {
                    "files": files["binary"],
                    "classes": ["membrane", "soluble"],
                    "id_column": "Unnamed: 0",
                },
            },
            "models": {"tiny_esm": {"path": str(esm), "pretrain_flops": 1.0e12, "n_params": 1234}},
            "lock_dir": str(tmp / "locks"),
            "max_length": 64,
            "lr": {"frozen": 3.0e-3, "full": 1.0e-3},
            "max_epochs": 6,
            "patience": 3,
        }
    )
    cfg["hwbench"] = {
        "enabled": True,
        "model": "tiny_esm",
        "dataset": "binary",
        "devices": list(devices),
        "device_counts": [1, 2],
        "precision": "bf16",
        "max_length": 64,
        "warmup": 2,
        "epochs": 2,
        "batch_size": 8,
        "max_samples": 32,
    }
    path = tmp / f"config-{'-'.join(devices)}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def run(served, tmp_path_factory):
    base_url, files, planted = served
    tmp = tmp_path_factory.mktemp("downstream")
    esm = tiny_esm(tmp / "tiny-esm")
    config = _config(tmp, base_url, esm)
    workdir = tmp / "wd"
    snakemake(workdir, "--cores", "2", "downstream", "hwbench", config=config, timeout=1500)
    return {"wd": workdir, "config": config, "tmp": tmp, "files": files, "planted": planted, "esm": esm}


def test_downloads_are_locked_and_converted_with_counts_reported(run):
    wd, files = run["wd"], run["files"]
    lock = (run["tmp"] / "locks/subcellular.lock.tsv").read_text()
    for split in SIZES:
        body = (files / f"subcellular_{split}.parquet").read_bytes()
        assert hashlib.sha256(body).hexdigest() in lock
    table = pl.read_parquet(wd / "results/downstream/data/subcellular.parquet")
    source = pl.read_parquet(files / "subcellular_train.parquet")
    train = table.filter(pl.col("split") == "train")
    assert train["sequence"].to_list() == [s.replace(" ", "") for s in source["prot_seq"]]
    assert train["label"].to_list() == [SUBCELLULAR_CLASSES[i] for i in source["localization"]]
    datasets = pl.read_csv(wd / "results/downstream/datasets.csv")
    sub = {r["split"]: r for r in datasets.filter(pl.col("dataset") == "subcellular").iter_rows(named=True)}
    assert {s: sub[s]["n_found"] for s in SIZES} == SIZES
    assert (sub["train"]["count_matches"], sub["test"]["count_matches"]) == (
        True,
        False,
    )  # 24 found, 25 expected


def test_leakage_counts_the_planted_pretraining_proteins(run):
    wd = run["wd"]
    pretrain = {r.sequence for p in (wd / "results/split/train").glob("*.fasta") for r in read_fasta(p)}
    in_pretrain = sum(1 for s in run["planted"] if s in pretrain)
    assert in_pretrain >= 4  # ~90% of proteins go to the train split
    leak = json.loads((wd / "results/downstream/data/binary.leakage.json").read_text())
    # exact copies share a cluster with their original; the planted proteins that went to valid/test and the
    # synthetic ones do not (a random composition-biased sequence shares < 50% identity with any protein)
    assert leak["splits"]["test"]["n_leaked"] == in_pretrain
    assert leak["splits"]["train"]["n_leaked"] == leak["splits"]["valid"]["n_leaked"] == 0


def test_every_model_and_method_is_scored_with_intervals(run):
    results = pl.read_csv(run["wd"] / "results/downstream/results.csv")
    assert results.height == 2 * 2 * 3  # data sets x methods x (2 own runs + 1 external checkpoint)
    assert set(results["model"]) == {"mlm_3e8_a", "mlm_3e8_b", "tiny_esm"}
    assert (results["test_accuracy_lo"] <= results["test_accuracy"]).all()
    assert (results["test_accuracy"] <= results["test_accuracy_hi"]).all()
    external = results.filter(pl.col("model") == "tiny_esm")
    assert (external["pretrain_flops"] == 1.0e12).all() and (external["kind"] == "external").all()
    own = results.filter(pl.col("kind") == "own")
    assert set(own["pretrain_flops"]) == {3.0e8}
    # the composition-coded synthetic classes are separable from mean-pooled features
    frozen_esm = external.filter((pl.col("method") == "frozen") & (pl.col("dataset") == "subcellular"))
    assert frozen_esm["test_accuracy"][0] > 0.8 > frozen_esm["majority_accuracy"][0]
    result = json.loads((run["wd"] / "results/downstream/subcellular/frozen/tiny_esm.json").read_text())
    assert result["metrics"]["backbone_unchanged"] is True
    assert (run["wd"] / "results/figures/downstream_compute.png").read_bytes()[:4] == b"\x89PNG"


def test_hwbench_tables_agree_with_the_downstream_classifier(run):
    wd = run["wd"]
    inference = pl.read_csv(wd / "results/hwbench/inference.csv")
    assert sorted(inference["padding"]) == ["max_length", "none"]
    assert (inference["n_sequences"] == SIZES["test"]).all() and (inference["device"] == "cpu").all()
    # batch-1 bf16 inference with the frozen classifier's head gives the stage's own test accuracy
    results = pl.read_csv(wd / "results/downstream/results.csv")
    frozen = results.filter(
        (pl.col("model") == "tiny_esm") & (pl.col("dataset") == "binary") & (pl.col("method") == "frozen")
    )
    assert inference["test_accuracy"].to_list() == pytest.approx([frozen["test_accuracy"][0]] * 2, abs=0.05)
    finetune = pl.read_csv(wd / "results/hwbench/finetune.csv").sort("n_devices")
    assert finetune["n_devices"].to_list() == [1, 2]
    assert (finetune["samples_per_epoch"] == 32).all()
    one, two = finetune["samples_per_s"].to_list()
    assert finetune["scaling_efficiency"][1] == pytest.approx(two / (2 * one))
    for fig in ("inference_time", "speedup", "scaling"):
        assert (wd / f"results/figures/hwbench_{fig}.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (wd / "results/hwbench/tables.md").read_text()
    assert "Inference" in markdown and "Fine-tuning" in markdown


def test_rerun_plans_nothing(run):
    proc = snakemake(run["wd"], "-n", "downstream", "hwbench", config=run["config"])
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_absent_gpu_fails_its_own_job_and_never_runs_on_the_cpu(run, served):
    config = _config(run["tmp"], served[0], run["esm"], devices=("cpu", "cuda"))
    wd = run["wd"]
    proc = snakemake(wd, "--cores", "1", "results/hwbench/infer/cuda.json", config=config, check=False)
    assert proc.returncode != 0
    assert "no usable CUDA device" in (wd / "logs/hwbench/infer/cuda.log").read_text()
    assert not (wd / "results/hwbench/infer/cuda.json").exists()
