"""The trainer on the CPU: learning and HF reload, determinism, gradient accumulation, bf16, attention
kernels in training, throughput records, early memory and device errors, torch.compile."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
from plmscale.flops import ModelShape
from plmscale.memory import MemoryEstimateTooLarge
from plmscale.validation import eval_steps
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from tests.trainkit import REPO, cli_args, execution, make_shards, metrics, run, settings, weights


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("tokens"))


@pytest.mark.parametrize(
    ("objective", "auto"), [("clm", AutoModelForCausalLM), ("mlm", AutoModelForMaskedLM)]
)
def test_training_run_learns_and_saves_a_loadable_hf_model(tmp_path, shards, objective, auto):
    s = settings(objective, flops_budget=3e9, eval_max_tokens=1024)
    out = tmp_path / "run"
    logs = []
    done = run(shards, out, s=s, logs=logs)
    # D = 3e9 / (6 * 13985) = 35,753.5 tokens; / 256 tokens per step = 139.7 -> 140 steps
    assert done["num_steps"] == s.num_steps == 140
    m = metrics(out)
    assert m.height == done["num_steps"]
    val = m["val_loss"].drop_nulls()
    assert val.len() == len(eval_steps(done["num_steps"], 4))
    assert val[-1] < val[0] - 0.5  # a repeated motif is learnable: loss must fall well below the start
    assert json.loads((out / "done.json").read_text())["final_val_loss"] == val[-1]
    reloaded = auto.from_pretrained(out / "model")
    assert type(reloaded).__name__.endswith("ForCausalLM" if objective == "clm" else "ForMaskedLM")
    assert (out / "model" / "vocab.txt").is_file()
    assert logs[0].startswith("cpu") or any(line.startswith("run test/run") for line in logs)


def test_training_is_deterministic(tmp_path, shards):
    losses = []
    for k in range(2):
        run(shards, tmp_path / f"r{k}")
        losses.append(metrics(tmp_path / f"r{k}")["train_loss"].to_list())
    assert losses[0] == losses[1]


def test_accumulated_update_equals_the_one_batch_update(tmp_path, shards):
    """8 rows per step as one forward, or as 4 micro-batches of 2: the same weights (fp32, tight)."""
    s = settings("mlm", flops_budget=2.5e8)  # 12 steps
    run(shards, tmp_path / "one", s=s)
    run(shards, tmp_path / "acc", s=s, ex=execution(micro_batch_rows=2))
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "acc")
    np.testing.assert_allclose(a["train_loss"].to_numpy(), b["train_loss"].to_numpy(), rtol=0, atol=2e-6)
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "acc")
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=2e-6, rtol=0, msg=name)


def test_micro_batch_that_does_not_divide_the_batch_is_refused(tmp_path, shards):
    with pytest.raises(ValueError, match=r"train.micro_batch_rows=3 does not divide the 8 rows"):
        run(shards, tmp_path / "x", ex=execution(micro_batch_rows=3))


def test_too_big_micro_batch_fails_before_building_the_model(tmp_path, shards):
    big = settings("mlm", shape=ModelShape(4, 4096, 32), batch_rows=1024, flops_budget=1e15)
    with pytest.raises(MemoryEstimateTooLarge, match=r"GiB per process exceeds 90%.*train.micro_batch_rows"):
        run(shards, tmp_path / "x", s=big, ex=execution(micro_batch_rows=1024))
    assert not (tmp_path / "x" / "model" / "config.json").exists()


def test_micro_batch_zero_is_derived_from_the_memory_estimate(monkeypatch):
    """micro_batch_rows: 0 takes the largest divisor of the local rows whose estimate fits 90% of the
    device's memory (the estimate is affine in the rows: fixed state + rows x per-row activations)."""
    from plmscale import memory
    from plmscale.steps import fit_micro_batch

    s = settings("mlm", shape=ModelShape(8, 1152, 16), batch_rows=96, context=1024)
    cpu = torch.device("cpu")
    monkeypatch.setattr(memory, "device_memory_bytes", lambda _d: 2**50)
    one, two = (fit_micro_batch(s, execution(micro_batch_rows=r), 1, cpu)[1]["total"] for r in (1, 2))
    per_row, fixed = two - one, 2 * one - two
    assert fixed > 2e9 and per_row > 1e8  # 1.3e8 parameters x 16 B; dense scores and activations per row
    for gib in (4, 8, 16, 64):
        monkeypatch.setattr(memory, "device_memory_bytes", lambda _d, gib=gib: gib * 2**30)
        rows, estimate = fit_micro_batch(s, execution(micro_batch_rows=0), 1, cpu)
        fits = [d for d in range(1, 97) if 96 % d == 0 and fixed + d * per_row <= 0.9 * gib * 2**30]
        assert rows == max(fits) and estimate["total"] == fixed + rows * per_row
    monkeypatch.setattr(memory, "device_memory_bytes", lambda _d: 2**30)  # not even one row fits
    with pytest.raises(MemoryEstimateTooLarge):
        fit_micro_batch(s, execution(micro_batch_rows=0), 1, cpu)


def test_bf16_losses_track_fp32(tmp_path, shards):
    """bf16 autocast (fp32 master weights and AdamW state) against fp32 over a short CPU run: every
    validation loss within 0.05 nats (stated tolerance; measured differences are ~1e-2 or less)."""
    s32 = settings("mlm", flops_budget=1e9)
    s16 = settings("mlm", flops_budget=1e9, precision="bf16")
    run(shards, tmp_path / "fp32", s=s32)
    done = run(shards, tmp_path / "bf16", s=s16)
    v32 = metrics(tmp_path / "fp32")["val_loss"].drop_nulls().to_numpy()
    v16 = metrics(tmp_path / "bf16")["val_loss"].drop_nulls().to_numpy()
    np.testing.assert_allclose(v16, v32, rtol=0, atol=0.05)
    assert not np.array_equal(v16, v32)  # the bf16 path really ran
    assert v16[-1] < v16[0] - 0.3
    assert done["settings"]["precision"] == "bf16"
    w = weights(tmp_path / "bf16")
    assert all(t.dtype == torch.float32 for t in w.values())  # master weights stay fp32


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_varlen_attention_trains_like_the_dense_reference(tmp_path, shards, objective):
    s = settings(objective, flops_budget=1e8)
    run(shards, tmp_path / "sdpa", s=s)
    logs = []
    run(shards, tmp_path / "varlen", s=s, ex=execution(attention="varlen"), logs=logs)
    a, b = metrics(tmp_path / "sdpa"), metrics(tmp_path / "varlen")
    np.testing.assert_allclose(a["train_loss"].to_numpy(), b["train_loss"].to_numpy(), rtol=0, atol=1e-5)
    assert any("attention=varlen" in line for line in logs)


def test_flex_attention_cannot_train_on_cpu_and_says_so(tmp_path, shards):
    with pytest.raises(ValueError, match=r"flex"):
        run(shards, tmp_path / "x", ex=execution(attention="flex"))


def test_throughput_lines_metrics_and_done_summary(tmp_path, shards):
    """Every log_every steps a timestamped line; the same columns in metrics.parquet; MFU against a given
    peak: tokens/s x (6N + 12 L d T) / peak (PaLM App. B), and 6N / peak."""
    s = settings("mlm", flops_budget=2.5e8)  # 2.5e8 / (6 * 13985) / 256 = 11.6 -> 12 steps
    logs = []
    done = run(shards, tmp_path / "r", s=s, logs=logs, ex=execution(log_every=5, peak_flops=1e10))
    lines = [line for line in logs if " step " in line and "tokens/s" in line]
    assert [line.split(" step ")[1].split()[0] for line in lines] == ["5/12", "10/12", "12/12"]
    assert all(line[:4].isdigit() and all(k in line for k in ("MFU", "ETA", "grad_norm")) for line in lines)
    m = metrics(tmp_path / "r")
    logged = m.filter(pl.col("tokens_per_second").is_not_null())
    assert logged["step"].to_list() == [5, 10, 12]
    n, layers, width, context = s.n_params, 1, 32, 32
    per_token = 6 * n + 12 * layers * width * context
    expect = logged["tokens_per_second"] * per_token / 1e10
    np.testing.assert_allclose(logged["mfu"].to_numpy(), expect.to_numpy(), rtol=1e-9)
    expect_6n = logged["tokens_per_second"] * 6 * n / 1e10
    np.testing.assert_allclose(logged["mfu_6n"].to_numpy(), expect_6n.to_numpy(), rtol=1e-9)
    assert (m["grad_norm"] > 0).all()
    assert done["tokens_per_second"] > 0 and done["warmup_seconds"] > 0
    assert done["mfu"] == pytest.approx(done["tokens_per_second"] * per_token / 1e10)
    assert done["peak_flops_source"] == "override" and done["peak_memory_bytes"] > 0


def test_cuda_or_hpu_asked_for_and_absent_fails_at_start_naming_the_host(tmp_path, shards):
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    for device in ("cuda", "hpu"):
        if device == "cuda" and torch.cuda.is_available():
            continue
        args = cli_args(shards, tmp_path / device, device=device)
        proc = subprocess.run([sys.executable, "-m", "plmscale.train_cli", *args], capture_output=True,
                              text=True, env=env, timeout=120)  # fmt: skip
        assert proc.returncode not in (0, 75)
        assert "DeviceUnavailable" in proc.stderr and device in proc.stderr
        assert socket.gethostname() in proc.stderr
        assert not (tmp_path / device / "done.json").exists()


def test_compile_trains_like_eager_and_reports_its_warmup_apart(tmp_path, shards):
    s = settings("mlm", flops_budget=5e7)  # 6 steps
    run(shards, tmp_path / "eager", s=s)
    logs = []
    done = run(shards, tmp_path / "compiled", s=s, ex=execution(compile=True), logs=logs)
    a, b = metrics(tmp_path / "eager"), metrics(tmp_path / "compiled")
    np.testing.assert_allclose(a["train_loss"].to_numpy(), b["train_loss"].to_numpy(), rtol=0, atol=1e-4)
    assert any("compile=True" in line for line in logs)
    assert done["warmup_seconds"] > 0 and done["tokens_per_second"] > 0


def test_summary_prints_one_throughput_line_per_run():
    from plmscale.cli import format_summary

    info = {"n_runs": 2, "training_seconds": 3.0, "exponents": {},
            "best_run": {"val_loss": 2.5, "n_params": 1000, "num_tokens": 5000},
            "throughput": [
                {"run": "results/runs/mlm/1e9/a", "n_params": 1000, "tokens_per_second": 2000.4, "mfu": 0.125,
                 "wall_seconds": 1.25},
                {"run": "results/runs/mlm/1e9/b", "n_params": 3000, "tokens_per_second": 999.0, "mfu": None,
                 "wall_seconds": 1.75},
            ]}  # fmt: skip
    lines = format_summary({"mlm": info}).splitlines()
    assert "  run results/runs/mlm/1e9/a: N=1,000, 2,000 tokens/s, MFU 12.5%, 1.2 s" in lines
    assert "  run results/runs/mlm/1e9/b: N=3,000, 999 tokens/s, MFU n/a, 1.8 s" in lines


def test_changed_shard_bytes_never_produce_a_result(tmp_path):
    """A byte of ids.npy changed in place (same size, still a valid residue): training starts, the
    once-per-job verification catches the sha256 and the run fails naming the file, writing no output."""
    shards = make_shards(tmp_path)
    ids = shards[0] / "ids.npy"
    data = bytearray(ids.read_bytes())
    data[-5] = 5 if data[-5] != 5 else 6  # another standard residue id
    ids.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"token shard verification failed: .*ids.npy.*sha256"):
        run(shards, tmp_path / "run", s=settings("mlm", flops_budget=5e7))
    assert not any((tmp_path / "run" / name).exists() for name in ("done.json", "metrics.parquet"))
