"""Training that survives the cluster: kill-and-resume equivalence, half-written checkpoints, retention,
the time-limit exit (code 75) and SIGTERM/SIGUSR1 through the real CLI."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from plmscale import checkpoint as ckpt
from plmscale.flops import ModelShape
from plmscale.tokens import tokenize_shard
from plmscale.train import (
    EX_TEMPFAIL,
    DistInfo,
    TrainingStopped,
    TrainSettings,
    dist_info_from_env,
    train_run,
)
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
EVERY = 5


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    base = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(1)
    motif = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
    for name, n in (("train", 400), ("valid", 40)):
        fasta = base / f"{name}.fasta"
        fasta.write_text("".join(f">{name}{i}\n{motif[: rng.integers(10, 33)]}\n" for i in range(n)))
        tokenize_shard(fasta, base / name, shard_index=0, num_shards=1)
    return base / "train", base / "valid"


def settings(objective="mlm", **overrides):
    values = dict(
        objective=objective, shape=ModelShape(1, 32, 2), flops_budget=5e8, context=32, batch_rows=8,
        peak_lr=5e-3, warmup_fraction=0.1, min_lr_ratio=0.1, weight_decay=0.1, beta1=0.9, beta2=0.95,
        grad_clip=1.0, mask_ratio=0.15 if objective == "mlm" else 0.0, seed=0, eval_points=4,
        eval_max_tokens=512, eval_seed=3,
    )  # fmt: skip
    values.update(overrides)
    return TrainSettings(**values)


def run(shards, out: Path, s=None, logs=None, **kw):
    out.mkdir(parents=True, exist_ok=True)
    log = logs.append if logs is not None else (lambda *a: None)
    return train_run(
        s or settings(), [shards[0]], [shards[1]], model_dir=out / "model",
        metrics_path=out / "metrics.parquet", done_path=out / "done.json", log=log, **kw,
    )  # fmt: skip


def assert_same_run(a: Path, b: Path):
    ma, mb = pl.read_parquet(a / "metrics.parquet"), pl.read_parquet(b / "metrics.parquet")
    assert ma.height == mb.height == settings().num_steps
    assert ma.equals(mb)  # every step's train loss, val loss, lr, tokens: bit for bit
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert (wa[name] == wb[name]).all(), name


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """The uninterrupted run, without any checkpointing."""
    out = tmp_path_factory.mktemp("reference")
    run(shards, out)
    return out


def test_dist_info_from_torchrun_and_srun_variables():
    assert dist_info_from_env({}) == DistInfo(0, 1, 0)
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert dist_info_from_env(torchrun) == DistInfo(3, 4, 1)
    srun = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert dist_info_from_env(srun) == DistInfo(5, 8, 1)
    assert dist_info_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).world_size == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_at_a_random_step_then_resume_reproduces_the_uninterrupted_run(
    shards, reference, tmp_path, sig
):
    total = settings().num_steps
    k = random.Random(f"resume-{sig.name}").choice([s for s in range(2, total - 1) if s % EVERY])
    ckdir, out = tmp_path / "ckpt", tmp_path / "run"

    def kill_at(step):
        if step == k:
            os.kill(os.getpid(), sig)  # the handler only sets a flag: the step finishes, then it saves

    with pytest.raises(TrainingStopped) as stopped:
        run(shards, out, checkpoint_dir=ckdir, checkpoint_every=EVERY, on_step=kill_at)
    assert stopped.value.step == k and stopped.value.exit_code == EX_TEMPFAIL == 75
    assert stopped.value.reason == sig.name
    assert [s for s, _ in ckpt.committed_checkpoints(ckdir)][-1] == k
    assert not (out / "done.json").exists() and not (out / "metrics.parquet").exists()
    assert signal.getsignal(sig) is signal.default_int_handler or signal.getsignal(sig) == signal.SIG_DFL

    logs = []
    done = run(shards, out, logs=logs, checkpoint_dir=ckdir, checkpoint_every=EVERY)
    assert f"resuming from checkpoint step-{k:08d} (step {k})" in logs
    assert done["resumed_from_step"] == k
    assert_same_run(reference, out)  # steps before k come from the checkpoint's metric records
    assert not ckdir.exists()  # a finished run removes its checkpoints


def test_kill_during_a_checkpoint_write_resumes_from_the_previous_committed_one(
    shards, reference, tmp_path, monkeypatch
):
    ckdir, out = tmp_path / "ckpt", tmp_path / "run"
    real_write = ckpt._write_torch

    def die_in_second_checkpoint(obj, path):
        if path.parent.name == f"step-{2 * EVERY:08d}.tmp" and path.name == "optimizer.pt":
            raise KeyboardInterrupt("simulated SIGKILL while writing")  # model.pt is already on disk
        real_write(obj, path)

    monkeypatch.setattr(ckpt, "_write_torch", die_in_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(shards, out, checkpoint_dir=ckdir, checkpoint_every=EVERY)
    monkeypatch.setattr(ckpt, "_write_torch", real_write)
    assert (ckdir / f"step-{2 * EVERY:08d}.tmp" / "model.pt").is_file()
    assert [s for s, _ in ckpt.committed_checkpoints(ckdir)] == [EVERY]
    # a step dir without its marker (killed between rename and nothing: cannot happen, but must not load)
    (ckdir / f"step-{3 * EVERY:08d}").mkdir()

    logs = []
    run(shards, out, logs=logs, checkpoint_dir=ckdir, checkpoint_every=EVERY)
    assert f"removed uncommitted checkpoint step-{2 * EVERY:08d}.tmp" in logs
    assert f"resuming from checkpoint step-{EVERY:08d} (step {EVERY})" in logs
    assert_same_run(reference, out)


def test_only_the_newest_two_committed_checkpoints_are_kept(shards, reference, tmp_path):
    ckdir, out = tmp_path / "ckpt", tmp_path / "run"
    run(shards, out, checkpoint_dir=ckdir, checkpoint_every=3, keep_checkpoints=True)
    total = settings().num_steps
    saved = [s for s in range(3, total, 3)]  # never at the last step: the outputs follow
    assert sorted(p.name for p in ckdir.iterdir()) == [f"step-{s:08d}" for s in saved[-2:]]
    for _, path in ckpt.committed_checkpoints(ckdir):
        assert {p.name for p in path.iterdir()} == {
            "model.pt", "optimizer.pt", "rng.pt", "trainer.json", "COMMITTED"
        }  # fmt: skip
    assert_same_run(reference, out)  # checkpointing itself changes nothing


def test_corrupted_newest_checkpoint_falls_back_to_the_previous_one(shards, reference, tmp_path):
    ckdir, out = tmp_path / "ckpt", tmp_path / "run"
    with pytest.raises(TrainingStopped):
        run(shards, out, checkpoint_dir=ckdir, time_limit_s=0.0)  # stops after one step
    assert [s for s, _ in ckpt.committed_checkpoints(ckdir)] == [1]
    with pytest.raises(TrainingStopped):
        run(shards, out, checkpoint_dir=ckdir, time_limit_s=0.0)  # resumes, one more step
    newest = ckdir / "step-00000002" / "model.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    logs = []
    run(shards, out, logs=logs, checkpoint_dir=ckdir)
    assert any("skipping checkpoint step-00000002" in line and "model.pt" in line for line in logs)
    assert "resuming from checkpoint step-00000001 (step 1)" in logs
    assert_same_run(reference, out)


def test_checkpoints_of_other_settings_are_discarded(shards, tmp_path):
    ckdir = tmp_path / "ckpt"
    with pytest.raises(TrainingStopped):
        run(shards, tmp_path / "a", checkpoint_dir=ckdir, time_limit_s=0.0)
    logs = []
    run(shards, tmp_path / "b", s=settings(peak_lr=4e-3), logs=logs, checkpoint_dir=ckdir)
    assert any(line.startswith("discarding checkpoint step-00000001") for line in logs)
    assert not any("resuming" in line for line in logs)


def cli(shards, out: Path, *extra: str) -> list[str]:
    s = settings()
    return [
        "--objective", s.objective, "--layers", "1", "--width", "32", "--heads", "2",
        "--flops", str(s.flops_budget), "--lr", str(s.peak_lr), "--context", "32", "--batch-rows", "8",
        "--warmup-fraction", "0.1", "--mask-ratio", "0.15", "--eval-points", "4", "--eval-max-tokens", "512",
        "--eval-seed", "3", "--train-dirs", str(shards[0]), "--valid-dirs", str(shards[1]),
        "--model-dir", str(out / "model"), "--metrics", str(out / "metrics.parquet"),
        "--done", str(out / "done.json"), "--device", "cpu", *extra,
    ]  # fmt: skip


def test_time_limit_exits_75_with_a_committed_checkpoint_and_the_rerun_finishes(shards, reference, tmp_path):
    ckdir, out = tmp_path / "ckpt", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    args = [sys.executable, "-m", "plmscale.train_cli", *cli(shards, out, "--checkpoint-dir", str(ckdir))]
    limited = [*args, "--time-limit-s", "0"]
    first = subprocess.run(limited, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 75, first.stdout + first.stderr
    assert "stopping at step 1/" in first.stdout and "rerun to resume" in first.stderr
    assert [p.name for p in ckdir.iterdir()] == ["step-00000001"]
    assert (ckdir / "step-00000001" / "COMMITTED").is_file()
    assert not (out / "done.json").exists()
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from checkpoint step-00000001 (step 1)" in second.stdout.splitlines()
    assert_same_run(reference, out)


def test_sigterm_to_the_cli_process_saves_exits_75_and_resumes(shards, reference, tmp_path):
    ckdir, out = tmp_path / "ckpt", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    slow = (  # the real CLI, each step slowed down so the signal lands mid-run
        "import sys, time; import plmscale.train as t; real = t.local_batch\n"
        "t.local_batch = lambda *a: (time.sleep(0.2), real(*a))[1]\n"
        "from plmscale.train_cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = cli(shards, out, "--checkpoint-dir", str(ckdir), "--checkpoint-every", "2")
    proc = subprocess.Popen([sys.executable, "-c", slow, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 120
    while not ckpt.committed_checkpoints(ckdir) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, output
    stopped = [s for s, _ in ckpt.committed_checkpoints(ckdir)][-1]
    assert f"stopping at step {stopped}/{settings().num_steps} (SIGTERM)" in output
    logs = []
    run(shards, out, logs=logs, checkpoint_dir=ckdir, checkpoint_every=2)
    assert f"resuming from checkpoint step-{stopped:08d} (step {stopped})" in logs
    assert_same_run(reference, out)
