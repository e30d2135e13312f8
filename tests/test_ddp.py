"""Several processes (torchrun, gloo on CPU) train the same model as one process on the same global batch:
DDP with gradient accumulation, FSDP2 with and without activation checkpointing, and checkpoints that
resume across processes and parallelism."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from plmscale import checkpoint as ckpt

from tests.trainkit import REPO, cli_args, make_shards, metrics, run, settings, weights

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def single(shards, tmp_path_factory):
    """One process, the whole global batch in one forward: the reference of every test here."""
    out = tmp_path_factory.mktemp("single")
    run(shards, out)
    return out


def torchrun(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "plmscale.train_cli", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def assert_close_runs(a: Path, b: Path, atol: float = 1e-5):
    ma, mb = metrics(a), metrics(b)
    assert ma.height == mb.height == settings().num_steps
    assert ma["step"].to_list() == mb["step"].to_list()
    np.testing.assert_allclose(ma["train_loss"].to_numpy(), mb["train_loss"].to_numpy(), rtol=0, atol=atol)
    va, vb = ma["val_loss"].to_numpy(), mb["val_loss"].to_numpy()
    np.testing.assert_allclose(va.astype(float), vb.astype(float), rtol=0, atol=atol)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=0, msg=name)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_two_processes_match_one_process_on_the_same_global_batch(shards, tmp_path, objective):
    single = tmp_path / "single"
    run(shards, single, s=settings(objective))
    multi = tmp_path / "multi"
    out = ok(torchrun(2, cli_args(shards, multi, s=settings(objective))))
    assert "processes=2" in out and "parallel=ddp" in out
    assert_close_runs(single, multi)


def test_two_processes_with_accumulation_match_one_process(shards, single, tmp_path):
    """4 rows per process per step as 2 micro-batches of 2: DDP syncs once per step, same update."""
    out = ok(torchrun(2, cli_args(shards, tmp_path / "acc", micro_batch_rows=2)))
    assert "micro_batch_rows=2 accumulation=2" in out
    assert_close_runs(single, tmp_path / "acc")


@pytest.mark.parametrize("activation_checkpointing", [False, True])
def test_fsdp_on_two_processes_matches_one_process(shards, single, tmp_path, activation_checkpointing):
    out = ok(torchrun(2, cli_args(shards, tmp_path / "fsdp", parallel="fsdp",
                                  activation_checkpointing=activation_checkpointing)))  # fmt: skip
    assert "parallel=fsdp" in out and f"activation_checkpointing={activation_checkpointing}" in out
    assert_close_runs(single, tmp_path / "fsdp")


def test_fsdp_stops_checkpoints_full_state_and_resumes_under_ddp(shards, single, tmp_path):
    """An FSDP run stopped by its time limit writes a full (unsharded) checkpoint; the retry resumes it
    with another parallelism and world size and still lands on the one-process run."""
    out, ckdir = tmp_path / "run", tmp_path / "ckpt"
    args = cli_args(shards, out, checkpoint_dir=ckdir, parallel="fsdp")
    stopped = torchrun(2, [*args, "--time-limit-s", "0"])
    assert stopped.returncode != 0 and "exit code 75" in stopped.stdout + stopped.stderr
    assert [s for s, _ in ckpt.committed_checkpoints(ckdir)] == [1]
    state = torch.load(ckdir / "step-00000001" / "model.pt", weights_only=True)
    assert state["roberta_prelayernorm.encoder.layer.0.attention.self.query.weight"].shape == (32, 32)  # full
    resumed = run(shards, out, checkpoint_dir=ckdir)  # one process, DDP path
    assert resumed["resumed_from_step"] == 1
    assert_close_runs(single, out)


def test_two_processes_stop_together_and_resume(shards, single, tmp_path):
    multi, ckdir = tmp_path / "multi", tmp_path / "ckpt"
    args = cli_args(shards, multi, checkpoint_dir=ckdir)
    stopped = torchrun(2, [*args, "--time-limit-s", "0"])
    assert stopped.returncode != 0  # torchrun reports its workers' exit code 75 as a failure
    assert "exit code 75" in stopped.stdout + stopped.stderr
    assert [s for s, _ in ckpt.committed_checkpoints(ckdir)] == [1]
    assert not (multi / "done.json").exists()
    resumed = ok(torchrun(2, args))
    assert "resuming from checkpoint step-00000001 (step 1)" in resumed
    assert resumed.count("resuming from checkpoint") == 1  # rank 0 logs, alone
    assert_close_runs(single, multi)


def test_global_batch_must_divide_among_processes(shards, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match=r"batch_rows=8 is not divisible by the 3 processes"):
        run(shards, tmp_path / "x")
