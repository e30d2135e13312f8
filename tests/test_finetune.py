"""Downstream classification: metrics against hand-worked values, backbones (own runs and a tiny ESM-2 built
with the real HF classes), frozen vs full training, early stopping, DDP over gloo, the hardware benchmark."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from plmscale.backbones import ModelSpec, external_models, load_backbone, mean_readout, pad_batch
from plmscale.distributed import DistInfo
from plmscale.downstream_results import FinetuneResult
from plmscale.finetune import (
    FinetuneSettings,
    parameter_digest,
    split_from_table,
    train_classifier,
)
from plmscale.hwbench import finetune_benchmark, inference_benchmark, scaling_table
from plmscale.metrics import accuracy_mcc, bootstrap_intervals, confusion_matrix, mcc_from_confusion

from tests.downstream_kit import synthetic_dataset, tiny_esm

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_binary_mcc_hand_worked():
    # TP=1 FN=1 TN=2 FP=1: MCC = (1*2 - 1*1) / sqrt(2*2*3*3) = 1/6
    acc, mcc = accuracy_mcc(np.array([1, 1, 0, 0, 0]), np.array([1, 0, 0, 0, 1]), 2)
    assert acc == pytest.approx(3 / 5)
    assert mcc == pytest.approx(1 / 6)


def test_multiclass_mcc_hand_worked_and_as_a_correlation_of_one_hot_labels():
    c = np.array([[2, 1, 0], [0, 2, 1], [1, 0, 3]])
    # s = 10, c = 7, t = p = (3, 3, 4): (7*10 - 34) / sqrt((100 - 34)(100 - 34)) = 36/66
    assert mcc_from_confusion(c) == pytest.approx(36 / 66)
    y_true = np.repeat([0, 0, 0, 1, 1, 1, 2, 2, 2, 2], 1)
    y_pred = np.array([0, 0, 1, 1, 1, 2, 0, 2, 2, 2])
    assert (confusion_matrix(y_true, y_pred, 3) == c).all()
    # independent: Pearson correlation of the centred one-hot matrices (Gorodkin 2004, eq. 2)
    x, y = np.eye(3)[y_true], np.eye(3)[y_pred]
    x, y = x - x.mean(0), y - y.mean(0)
    assert mcc_from_confusion(c) == pytest.approx((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))
    assert mcc_from_confusion(np.array([[5, 0], [3, 0]])) == 0.0  # constant prediction


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    a = bootstrap_intervals(y, pred, 3, n_bootstrap=300, seed=5)
    assert a == bootstrap_intervals(y, pred, 3, n_bootstrap=300, seed=5)
    acc, mcc = accuracy_mcc(y, pred, 3)
    assert a["accuracy"][0] < acc < a["accuracy"][1] and a["mcc"][0] < mcc < a["mcc"][1]
    # the binomial standard error sqrt(p(1-p)/n) ~ 0.026 gives a 95% width of ~0.10
    assert 0.06 < a["accuracy"][1] - a["accuracy"][0] < 0.14
    perfect = bootstrap_intervals(y, y, 3, n_bootstrap=50, seed=0)
    assert perfect == {"accuracy": (1.0, 1.0), "mcc": (1.0, 1.0)}


@pytest.fixture(scope="module")
def esm_dir(tmp_path_factory):
    return tiny_esm(tmp_path_factory.mktemp("esm") / "tiny-esm")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = synthetic_dataset(tmp_path_factory.mktemp("data") / "ds.parquet", n_classes=3)
    table = pl.read_parquet(path)
    return path, {s: split_from_table(table, s) for s in ("train", "valid", "test")}


def test_external_checkpoint_tokenizes_and_reads_out_like_the_hf_classes(esm_dir):
    from transformers import AutoTokenizer, EsmModel

    backbone = load_backbone(ModelSpec("esm", "external", str(esm_dir)))
    reference_tok = AutoTokenizer.from_pretrained(esm_dir)
    seqs = ["MKTAYIAK", "LLVV"]
    rows = backbone.tokenize(seqs, 64)
    assert [r.tolist() for r in rows] == reference_tok(seqs)["input_ids"]
    # truncation keeps <cls> and <eos>: 6 tokens = <cls> + 4 residues + <eos>
    short = backbone.tokenize(["MKTAYIAK"], 6)[0]
    assert short.tolist() == reference_tok(["MKTAYIAK"], truncation=True, max_length=6)["input_ids"][0]
    ids, attention, residue = pad_batch(rows, backbone.pad_id, backbone.special_ids)
    assert residue.sum(1).tolist() == [8, 4]
    hidden = EsmModel.from_pretrained(esm_dir, add_pooling_layer=False)(ids, attention_mask=attention)
    manual = hidden.last_hidden_state[1, 1:5].mean(0)  # residues of the second protein
    pooled = mean_readout(backbone(ids, attention), residue)
    assert torch.allclose(pooled[1], manual, atol=1e-6)


def test_own_run_backbone_uses_the_project_tokenizer(tmp_path):
    from plmscale.flops import ModelShape
    from plmscale.model import build_model

    model = build_model(ModelShape(layers=1, width=16, heads=2), "mlm", context=32, seed=0)
    model.save_pretrained(tmp_path / "model")
    backbone = load_backbone(ModelSpec("own", "own", str(tmp_path / "model"), objective="mlm"))
    assert backbone.max_positions == 32
    row = backbone.tokenize(["A" * 50], 1024)[0]  # capped at the run's context, <eos> kept
    assert len(row) == 32 and row[0] == 0 and row[-1] == 2


def test_external_models_config_forms():
    specs = external_models({"esm8m": "/ckpt/esm2_8M", "esm650m": {"path": "/c/650", "pretrain_flops": 1e22}})
    assert [(s.name, s.path, s.pretrain_flops) for s in specs] == [
        ("esm8m", "/ckpt/esm2_8M", None),
        ("esm650m", "/c/650", 1e22),
    ]
    with pytest.raises(ValueError, match="no path"):
        external_models({"x": {"pretrain_flops": 1.0}})
    with pytest.raises(ValueError, match=r"config\.json"):
        load_backbone(ModelSpec("missing", "external", "/nonexistent/ckpt"))


def _settings(**kw) -> FinetuneSettings:
    base = dict(lr=3e-3, max_epochs=6, patience=3, batch_size=8, n_bootstrap=100, max_length=64)
    return FinetuneSettings(**{**base, **kw})


def test_frozen_keeps_the_backbone_and_cached_equals_streamed(esm_dir, dataset):
    _, splits = dataset
    outcomes = {}
    for cache in (True, False):
        backbone = load_backbone(ModelSpec("esm", "external", str(esm_dir)))
        before = parameter_digest(backbone)
        out = train_classifier(
            backbone, splits, 3, _settings(cache_features=cache), device=CPU, precision="fp32"
        )
        assert parameter_digest(backbone) == before and out.metrics["backbone_unchanged"]
        outcomes[cache] = out
    # embedding once in eval mode is what the frozen backbone computes every step: same head, same history
    for key, value in outcomes[True].head_state.items():
        assert torch.allclose(value, outcomes[False].head_state[key], atol=1e-5), key
    assert [h["valid_accuracy"] for h in outcomes[True].history] == [
        h["valid_accuracy"] for h in outcomes[False].history
    ]
    assert outcomes[True].metrics["test_accuracy"] > 0.9 > outcomes[True].metrics["majority_accuracy"]


def test_full_finetuning_changes_the_backbone_and_early_stopping_keeps_the_best_epoch(esm_dir, dataset):
    _, splits = dataset
    backbone = load_backbone(ModelSpec("esm", "external", str(esm_dir)))
    before = parameter_digest(backbone)
    out = train_classifier(
        backbone, splits, 3, _settings(method="full", max_epochs=12, patience=2), device=CPU, precision="bf16"
    )
    assert parameter_digest(backbone) != before
    accs = [h["valid_accuracy"] for h in out.history]
    best = int(np.argmax(accs)) + 1  # the first epoch reaching the maximum
    assert out.metrics["best_epoch"] == best and out.metrics["valid_accuracy_best"] == max(accs)
    assert len(accs) == 12 or len(accs) == best + 2  # stopped exactly `patience` epochs after the best


def test_test_metrics_are_recomputable_from_the_predictions(esm_dir, dataset):
    _, splits = dataset
    out = train_classifier(
        load_backbone(ModelSpec("e", "external", str(esm_dir))),
        splits,
        3,
        _settings(max_epochs=2),
        device=CPU,
        precision="fp32",
    )
    acc, mcc = accuracy_mcc(splits["test"].labels, out.predictions, 3)
    assert (out.metrics["test_accuracy"], out.metrics["test_mcc"]) == (acc, mcc)
    majority = np.bincount(splits["train"].labels).argmax()
    assert out.metrics["majority_accuracy"] == pytest.approx(np.mean(splits["test"].labels == majority))


def test_result_round_trips():
    result = FinetuneResult(
        model=ModelSpec("m", "own", "/p", objective="mlm", pretrain_flops=1e11, n_params=100),
        dataset="d",
        method="frozen",
        n_classes=2,
        n_train=3,
        n_valid=2,
        n_test=2,
        metrics={"test_accuracy": 0.5},
        history=({"epoch": 1, "valid_accuracy": 0.5},),
        settings=FinetuneSettings(),
        device="cpu",
        precision="fp32",
        world_size=1,
        wall_s=1.0,
    )
    assert FinetuneResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    with pytest.raises(ValueError, match="unknown keys"):
        FinetuneResult.from_dict({**result.to_dict(), "extra": 1})


def _task(dataset: str, data: Path, output: Path, head: Path, n_classes: int = 3) -> dict:
    """One data set of a finetune job (the rule writes one per data set: plmscale.downstream_cli)."""
    return {
        "dataset": dataset,
        "data": str(data),
        "n_classes": n_classes,
        "output": str(output),
        "head": str(head),
    }


@pytest.mark.parametrize("method", ["frozen", "full"])
def test_a_job_over_two_data_sets_trains_each_as_a_job_of_its_own_would(esm_dir, dataset, tmp_path, method):
    """One job per (method, model) trains a classifier per data set: the second data set's head and
    metrics equal those of a job with that data set alone (full fine-tuning starts again from the
    checkpoint; a frozen backbone is shared unchanged)."""
    path, _ = dataset
    other = synthetic_dataset(tmp_path / "other.parquet", n_classes=2, seed=5)
    base = {
        "model": ModelSpec("esm", "external", str(esm_dir)).to_dict(),
        "settings": _settings(method=method, max_epochs=2).to_dict(),
        "device": "cpu",
        "precision": "fp32",
    }
    both = [_task("syn", path, tmp_path / "a.json", tmp_path / "a.pt"),
            _task("other", other, tmp_path / "b.json", tmp_path / "b.pt", n_classes=2)]  # fmt: skip
    alone = [_task("other", other, tmp_path / "b1.json", tmp_path / "b1.pt", n_classes=2)]
    _torchrun(1, {**base, "tasks": both}, tmp_path)
    _torchrun(1, {**base, "tasks": alone}, tmp_path)
    first = FinetuneResult.from_dict(json.loads((tmp_path / "a.json").read_text()))
    second = FinetuneResult.from_dict(json.loads((tmp_path / "b.json").read_text()))
    single = FinetuneResult.from_dict(json.loads((tmp_path / "b1.json").read_text()))
    assert (first.dataset, first.n_classes, second.dataset, second.n_classes) == ("syn", 3, "other", 2)
    assert second.metrics["test_accuracy"] == single.metrics["test_accuracy"]
    untimed = [[{k: v for k, v in e.items() if k != "seconds"} for e in r.history] for r in (second, single)]
    assert untimed[0] == untimed[1]
    heads = [torch.load(tmp_path / name, weights_only=True) for name in ("b.pt", "b1.pt")]
    for key in heads[1]:
        assert torch.equal(heads[0][key], heads[1][key]), key


def _torchrun(nproc: int, job: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env["PYTHONPATH"] = f"{REPO / 'workflow'}:{REPO}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "plmscale.downstream_cli",
        "finetune",
        "--job",
        json.dumps(job),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_gloo_ranks_train_like_one_process_with_the_global_batch(esm_dir, dataset, tmp_path):
    """DDP over 2 processes with 8 proteins each == 1 process with 16 (the loss scaling makes DDP's
    gradient average the global batch mean, also for the uneven last batch)."""
    path, _ = dataset
    heads = {}
    for nproc, batch in ((1, 16), (2, 8)):
        job = {
            "model": ModelSpec("esm", "external", str(esm_dir)).to_dict(),
            "settings": _settings(method="full", batch_size=batch, max_epochs=2).to_dict(),
            "device": "cpu",
            "precision": "fp32",
            "threads": nproc,
            "tasks": [_task("syn", path, tmp_path / f"r{nproc}.json", tmp_path / f"h{nproc}.pt")],
        }
        _torchrun(nproc, job, tmp_path)
        heads[nproc] = torch.load(tmp_path / f"h{nproc}.pt", weights_only=True)
        result = FinetuneResult.from_dict(json.loads((tmp_path / f"r{nproc}.json").read_text()))
        assert result.world_size == nproc
    for key in heads[1]:
        assert torch.allclose(heads[1][key], heads[2][key], atol=1e-5), key


def test_inference_benchmark_pads_as_asked_and_agrees_with_training_predictions(esm_dir, dataset):
    _, splits = dataset
    backbone = load_backbone(ModelSpec("e", "external", str(esm_dir)))
    out = train_classifier(backbone, splits, 3, _settings(max_epochs=2), device=CPU, precision="fp32")
    rows = inference_benchmark(
        backbone,
        splits["test"],
        3,
        head_state=out.head_state,
        device=CPU,
        precision="fp32",
        max_length=64,
        warmup=3,
    )
    by = {r["padding"]: r for r in rows}
    n = len(splits["test"].labels)
    real = sum(len(r) for r in backbone.tokenize(splits["test"].sequences, 64))
    assert by["max_length"]["n_sequences"] == n
    assert by["max_length"]["padded_tokens_per_s"] * by["max_length"]["wall_s"] == pytest.approx(n * 64)
    assert by["none"]["padded_tokens_per_s"] == pytest.approx(by["none"]["tokens_per_s"])
    assert by["none"]["tokens_per_s"] * by["none"]["wall_s"] == pytest.approx(real)
    # batch-1 inference with the trained head reproduces the training code's test accuracy
    assert by["none"]["test_accuracy"] == pytest.approx(out.metrics["test_accuracy"])
    assert by["max_length"]["test_accuracy"] == pytest.approx(out.metrics["test_accuracy"])
    # the blog's setting: the whole model cast to bf16 (8-bit mantissa) changes few predictions, if any
    bf16 = inference_benchmark(
        backbone,
        splits["test"],
        3,
        head_state=out.head_state,
        device=CPU,
        precision="bf16",
        max_length=64,
        warmup=0,
        paddings=("none",),
    )
    assert bf16[0]["precision"] == "bf16"
    assert bf16[0]["test_accuracy"] == pytest.approx(out.metrics["test_accuracy"], abs=0.1)


def test_finetune_benchmark_and_scaling_table(esm_dir, dataset):
    _, splits = dataset
    backbone = load_backbone(ModelSpec("e", "external", str(esm_dir)))
    row = finetune_benchmark(
        backbone,
        {"train": splits["train"]},
        3,
        _settings(cache_features=False, pad_to_max_length=True),
        epochs=2,
        device=CPU,
        precision="fp32",
        dist=DistInfo(0, 1, 0),
    )
    assert row["samples_per_epoch"] == 60 and row["epochs_timed"] == 1
    assert row["samples_per_s"] == pytest.approx(60 / row["epoch_seconds"][1])
    table = scaling_table(
        [
            {"device": "cpu", "n_devices": 1, "samples_per_s": 10.0},
            {"device": "cpu", "n_devices": 2, "samples_per_s": 18.0},
            {"device": "cuda", "n_devices": 4, "samples_per_s": 100.0},
        ]
    )
    assert [(r["speedup_vs_one"], r["scaling_efficiency"]) for r in table] == [
        (1.0, 1.0),
        (1.8, 0.9),
        (None, None),
    ]


def test_absent_device_fails_the_job_and_never_runs_on_the_cpu(esm_dir, dataset, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present here")
    path, _ = dataset
    job = {
        "model": ModelSpec("e", "external", str(esm_dir)).to_dict(),
        "settings": _settings().to_dict(),
        "device": "cuda",
        "precision": "bf16",
        "tasks": [_task("syn", path, tmp_path / "r.json", tmp_path / "h.pt")],
    }
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'workflow'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "plmscale.downstream_cli", "finetune", "--job", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode != 0 and "no usable CUDA device" in proc.stderr
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "h.pt").exists()


def test_split_from_table_rejects_an_empty_split():
    table = pl.DataFrame({"split": ["train"], "sequence": ["MK"], "label_id": [0]})
    split = split_from_table(table, "train")
    assert split.sequences == ("MK",) and split.labels.tolist() == [0]
    with pytest.raises(ValueError, match="no 'test' rows"):
        split_from_table(table, "test")


def test_downstream_objectives_outside_the_grid_are_skipped_and_said():
    from plmscale.downstream_config import parse_downstream

    cfg = parse_downstream({"objectives": ["mlm", "clm"], "methods": ["frozen"]}, ["clm"])
    assert (cfg.objectives, cfg.skipped_objectives) == (("clm",), ("mlm",))
    with pytest.raises(ValueError, match=r"downstream\.methods"):
        parse_downstream({"methods": ["linear"]}, ["mlm"])


def test_downstream_budgets_select_the_runs_that_get_classifiers():
    from plmscale.downstream_config import parse_downstream

    every = parse_downstream({"methods": ["frozen"]}, ["mlm"], [1e18, 3e18])
    assert every.budgets is None and every.takes_budget(1e18) and every.takes_budget(3e18)
    some = parse_downstream({"methods": ["frozen"], "budgets": [1.0e18]}, ["mlm"], [1e18, 3e18])
    assert some.takes_budget(1e18) and not some.takes_budget(3e18)
    unknown = r"downstream\.budgets: 1e\+19 not in grid\.budgets; .*\(1e\+18, 3e\+18\)"
    with pytest.raises(ValueError, match=unknown):
        parse_downstream({"budgets": [1e19]}, ["mlm"], [1e18, 3e18])
    with pytest.raises(ValueError, match=r"downstream\.budgets: an empty list"):
        parse_downstream({"budgets": []}, ["mlm"], [1e18])
