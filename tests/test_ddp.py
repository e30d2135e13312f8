"""Several processes (torchrun, gloo on CPU) train the same model as one process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from plmscale import checkpoint as ckpt
from safetensors.torch import load_file

from tests.test_resume import cli, run, settings, shards  # noqa: F401  (shards is a fixture)

REPO = Path(__file__).resolve().parents[1]


def torchrun(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "plmscale.train_cli", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def assert_close_runs(single: Path, multi: Path):
    a, b = pl.read_parquet(single / "metrics.parquet"), pl.read_parquet(multi / "metrics.parquet")
    assert a.height == b.height == settings().num_steps
    assert a["step"].to_list() == b["step"].to_list()
    assert a["train_loss"].to_numpy() == pytest.approx(b["train_loss"].to_numpy(), abs=1e-5, rel=0)
    assert a["val_loss"].to_numpy() == pytest.approx(b["val_loss"].to_numpy(), abs=1e-5, rel=0, nan_ok=True)
    wa, wb = load_file(single / "model/model.safetensors"), load_file(multi / "model/model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_two_processes_match_one_process_on_the_same_global_batch(shards, tmp_path, objective):  # noqa: F811
    single = tmp_path / "single"
    run(shards, single, s=settings(objective))
    multi = tmp_path / "multi"
    args = cli(shards, multi, "--device", "cpu")
    args[args.index("--objective") + 1] = objective
    args[args.index("--mask-ratio") + 1] = str(settings(objective).mask_ratio)
    proc = torchrun(2, args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "processes=2" in proc.stdout
    assert_close_runs(single, multi)


def test_two_processes_stop_together_and_resume(shards, tmp_path):  # noqa: F811
    single, multi, ckdir = tmp_path / "single", tmp_path / "multi", tmp_path / "ckpt"
    run(shards, single)
    args = cli(shards, multi, "--checkpoint-dir", str(ckdir))
    stopped = torchrun(2, [*args, "--time-limit-s", "0"])
    assert stopped.returncode != 0  # torchrun reports its workers' exit code 75 as a failure
    assert "exit code 75" in stopped.stdout + stopped.stderr
    assert [s for s, _ in ckpt.committed_checkpoints(ckdir)] == [1]
    assert not (multi / "done.json").exists()
    resumed = torchrun(2, args)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from checkpoint step-00000001 (step 1)" in resumed.stdout
    assert resumed.stdout.count("resuming from checkpoint") == 1  # rank 0 logs, alone
    assert_close_runs(single, multi)


def test_global_batch_must_divide_among_processes(shards, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match=r"batch_rows=8 is not divisible by the 3 processes"):
        run(shards, tmp_path / "x")
