"""Training that survives the cluster: kill-and-resume equivalence, half-written checkpoints, retention,
the time-limit exit (code 75) and SIGTERM/SIGUSR1 through the real CLI."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from plmscale import checkpoint as ckpt
from plmscale.distributed import DistInfo, dist_info_from_env
from plmscale.resume import InputsChanged
from plmscale.stopping import EX_TEMPFAIL, TrainingStopped

from tests.trainkit import REPO, assert_same_run, cli_args, execution, make_shards, run, settings

EVERY = 5


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """The uninterrupted run, without any checkpointing."""
    out = tmp_path_factory.mktemp("reference")
    run(shards, out)
    return out


def every(steps: int, **overrides):
    return execution(checkpoint_every=steps, **overrides)


def cli(shards, out, *extra: str, checkpoint_dir=None, **execution_overrides) -> list[str]:
    return [*cli_args(shards, out, checkpoint_dir=checkpoint_dir, **execution_overrides), *extra]


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
        run(shards, out, checkpoint_dir=ckdir, ex=every(EVERY), on_step=kill_at)
    assert stopped.value.step == k and stopped.value.exit_code == EX_TEMPFAIL == 75
    assert stopped.value.reason == sig.name
    assert [s for s, _ in ckpt.committed_checkpoints(ckdir)][-1] == k
    assert not (out / "done.json").exists() and not (out / "metrics.parquet").exists()
    assert signal.getsignal(sig) is signal.default_int_handler or signal.getsignal(sig) == signal.SIG_DFL

    logs = []
    done = run(shards, out, logs=logs, checkpoint_dir=ckdir, ex=every(EVERY))
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
        run(shards, out, checkpoint_dir=ckdir, ex=every(EVERY))
    monkeypatch.setattr(ckpt, "_write_torch", real_write)
    assert (ckdir / f"step-{2 * EVERY:08d}.tmp" / "model.pt").is_file()
    assert [s for s, _ in ckpt.committed_checkpoints(ckdir)] == [EVERY]
    # a step dir without its marker (killed between rename and nothing: cannot happen, but must not load)
    (ckdir / f"step-{3 * EVERY:08d}").mkdir()

    logs = []
    run(shards, out, logs=logs, checkpoint_dir=ckdir, ex=every(EVERY))
    assert f"removed uncommitted checkpoint step-{2 * EVERY:08d}.tmp" in logs
    assert f"resuming from checkpoint step-{EVERY:08d} (step {EVERY})" in logs
    assert_same_run(reference, out)


def test_only_the_newest_two_committed_checkpoints_are_kept(shards, reference, tmp_path):
    ckdir, out = tmp_path / "ckpt", tmp_path / "run"
    run(shards, out, checkpoint_dir=ckdir, ex=every(3, keep_checkpoints=True))
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


def test_resume_with_other_run_settings_is_refused_naming_the_change(shards, tmp_path):
    ckdir = tmp_path / "ckpt"
    with pytest.raises(TrainingStopped):
        run(shards, tmp_path / "a", checkpoint_dir=ckdir, time_limit_s=0.0)
    changed = r"run setting peak_lr: 0\.005 -> 0\.004.*on_input_change: restart"
    with pytest.raises(InputsChanged, match=changed):
        run(shards, tmp_path / "b", s=settings(peak_lr=4e-3), checkpoint_dir=ckdir)
    assert [s for s, _ in ckpt.committed_checkpoints(ckdir)] == [1]  # refused: nothing touched
    assert not (tmp_path / "b" / "done.json").exists()


def test_resume_on_changed_tokens_is_refused_and_restart_starts_fresh(shards, tmp_path):
    """The issue's case: the split changed under an interrupted run.  The checkpoint names its token
    manifests' checksums, so resuming on other tokens is refused; `restart` discards and says so."""
    ckdir = tmp_path / "ckpt"
    mine = make_shards(tmp_path)
    with pytest.raises(TrainingStopped):
        run(mine, tmp_path / "a", checkpoint_dir=ckdir, time_limit_s=0.0)
    make_shards(tmp_path, n_train=300, seed=2)  # the same shard paths now hold other proteins: a new split
    with pytest.raises(InputsChanged, match=r"train tokens shard \S+train changed \(manifest sha256\)"):
        run(mine, tmp_path / "b", checkpoint_dir=ckdir)
    logs = []
    done = run(mine, tmp_path / "b", logs=logs, checkpoint_dir=ckdir, ex=every(0, on_input_change="restart"))
    assert any(line.startswith("starting fresh, discarding the checkpoints") for line in logs)
    assert not any("resuming" in line for line in logs) and done["resumed_from_step"] is None


def test_resume_after_a_code_change_is_refused(shards, tmp_path, monkeypatch):
    from plmscale import resume

    ckdir = tmp_path / "ckpt"
    with pytest.raises(TrainingStopped):
        run(shards, tmp_path / "a", checkpoint_dir=ckdir, time_limit_s=0.0)
    monkeypatch.setattr(resume, "code_digest", lambda *_: "0123456789abcdef")  # as if a module was edited
    with pytest.raises(InputsChanged, match=r"training code digest [0-9a-f]{16} -> 0123456789abcdef"):
        run(shards, tmp_path / "b", checkpoint_dir=ckdir)


def test_time_limit_exits_75_with_a_committed_checkpoint_and_the_rerun_finishes(shards, reference, tmp_path):
    ckdir, out = tmp_path / "ckpt", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    args = [sys.executable, "-m", "plmscale.train_cli", *cli(shards, out, checkpoint_dir=ckdir)]
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
        "import sys, time; import plmscale.steps as t; real = t.local_batch\n"
        "t.local_batch = lambda *a: (time.sleep(0.2), real(*a))[1]\n"
        "from plmscale.train_cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = cli(shards, out, checkpoint_dir=ckdir, checkpoint_every=2)
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
    run(shards, out, logs=logs, checkpoint_dir=ckdir, ex=every(2))
    assert f"resuming from checkpoint step-{stopped:08d} (step {stopped})" in logs
    assert_same_run(reference, out)
