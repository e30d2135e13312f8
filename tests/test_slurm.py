"""The workflow on a real one-node SLURM cluster (tests/slurm/cluster.py) through the SHIPPED profile
config/profiles/slurm, with only site settings overridden.  Every job must go through sbatch with the
partition, GPU request, CPUs, memory and time limit that the dry run under the same profiles plans (the
rules' own resources plus the profile's site settings), read back from SLURM's accounting (sacct).

Skipped with the harness's reason where no cluster can be set up (not root, no apt-get, install failure).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from plmscale.config import flops_label

from tests.slurm import cluster
from tests.workflow_rules import planned_resources

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "config" / "profiles" / "slurm"
TEST_CONFIG = REPO / "tests" / "config" / "config.yaml"
SITE_ACCOUNT = "root"  # the local cluster's only account (slurmdbd validates -A)

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_cluster():
    ok, why = cluster.available()
    if not ok:
        pytest.skip(why)
    was_up = cluster.is_up()
    try:
        cluster.start()
    except cluster.ClusterError as exc:
        pytest.fail(f"local SLURM did not start: {exc}")
    yield
    if not was_up:  # leave a cluster someone started by hand running
        cluster.stop()


def shipped_profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def site_overlay(tmp: Path, extra: dict | None = None) -> Path:
    """A profile that changes only site settings.  Profiles merge per top-level key, so it repeats the shipped
    default-resources in full and changes the account in it."""
    default = dict(shipped_profile()["default-resources"], slurm_account=SITE_ACCOUNT)
    folder = tmp / "site-profile"
    folder.mkdir(exist_ok=True)
    # this cluster's GPUs are stand-ins (no CUDA): the trainer is asked for `auto`, which picks the CPU and
    # says so, instead of the shipped profile's `cuda`, which would (rightly) refuse to start here
    site = {"default-resources": default, "config": ["train={device: auto}"], **(extra or {})}
    (folder / "config.yaml").write_text(yaml.safe_dump(site))
    return folder


def small_config(tmp: Path, train: dict | None = None, **grid) -> Path:
    """The test study with a smaller grid: MLM only (downstream evaluates MLM runs), one budget, three
    shapes."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["train"].update(train or {})
    cfg["grid"].update({"objectives": ["mlm"], "budgets": [{"flops": 3.0e8, "shapes": ["a", "b", "c"]}]})
    cfg["grid"].update(grid)
    cfg["hwbench"] = {"enabled": False}  # its CPU jobs ask the profile's 16 threads; tested without SLURM
    cfg["downstream"].update(max_epochs=4, patience=2)  # the classifier jobs' placement is tested here
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(workdir: Path, config: Path, *args: str, timeout: int = 300, check: bool = True):
    # SIGINT, not SIGTERM: the slurm plugin ignores SIGTERM (notes/slurm-local.md); -k 30 as a last resort
    cmd = ["timeout", "-s", "INT", "-k", "30", str(timeout), sys.executable, "-m", "snakemake",
           "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config), *args]  # fmt: skip
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60, cwd=workdir, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")  # fmt: skip
    return proc


def sacct_since(start: datetime, workdir: Path) -> list[dict[str, str]]:
    """This workflow's jobs (sbatch -D <workdir>): other sessions may share the cluster."""
    fields = "JobID,JobName,Partition,AllocTRES,Timelimit,State,Comment,WorkDir"
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-a", "-S", start.strftime("%Y-%m-%dT%H:%M:%S"), f"--format={fields}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [dict(zip(fields.split(","), line.split("|"), strict=True)) for line in out.splitlines() if line]
    rows = [r for r in rows if Path(r["WorkDir"]).resolve() == workdir.resolve()]
    for row in rows:  # the plugin names jobs by run UUID and puts rule_<name>_wildcards_<...> into --comment
        m = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", row["Comment"])
        row["rule"] = m.group(1) if m else ""
        row["tres"] = dict(kv.split("=", 1) for kv in row["AllocTRES"].split(",") if "=" in kv)
    return rows


def mem_mb(value: str) -> float:
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    return float(value[:-1]) * units[value[-1]]


def minutes(limit: str) -> int:
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def planned_jobs(output: str) -> Counter:
    return Counter(m.group(1) for m in re.finditer(r"^rule (\w+):$", output, flags=re.M))


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slurm")
    workdir = tmp / "study"
    workdir.mkdir()
    config = small_config(tmp)
    # CI tuning next to the site keys: poll sacct every second at first (the workflow is 10 stages deep)
    overlay = site_overlay(tmp, {"slurm-init-seconds-before-status-checks": 1})
    profiles = ["--profile", str(PROFILE), "--profile", str(overlay)]
    dry_run = snakemake(workdir, config, "-n", *profiles).stdout
    planned = planned_jobs(dry_run)
    start = datetime.now() - timedelta(seconds=2)
    t0 = time.monotonic()
    # ~34 jobs, each a fresh Python under sbatch; 2 shared cores take 5-8 minutes, so leave room
    proc = snakemake(workdir, config, *profiles, timeout=900)
    took = time.monotonic() - t0
    time.sleep(1)
    jobs = sacct_since(start, workdir)
    print(f"\nSLURM run: {sum(planned.values())} jobs in {took:.0f} s")
    for row in jobs:
        print("  ", row["rule"], row["Partition"], row["AllocTRES"], row["Timelimit"], row["State"])
    return {"workdir": workdir, "config": config, "profiles": profiles, "planned": planned, "jobs": jobs,
            "resources": planned_resources(dry_run), "log": proc.stdout + proc.stderr}  # fmt: skip


def test_every_job_ran_through_sbatch(slurm_run):
    planned, jobs = slurm_run["planned"], slurm_run["jobs"]
    assert set(planned) >= {
        "embedded_source", "validate", "pool", "cluster", "split", "tokenize", "train", "evaluate",
        "fit", "plot_objective", "proxy_dataset", "finetune", "downstream_table", "plot_downstream",
        "summary",
    }  # fmt: skip
    for local in ("all",):  # local rules (localrules:) run inside snakemake, not as jobs
        planned.pop(local, None)
    assert Counter(j["rule"] for j in jobs if j["State"] == "COMPLETED") == planned, slurm_run["log"][-3000:]
    assert all(j["State"] == "COMPLETED" for j in jobs), [j for j in jobs if j["State"] != "COMPLETED"]


def expected_threads(rule: str, config: dict) -> int:
    """CPUs of a CPU job: its rule's threads (rules/*.smk): the study config's cluster.threads for the MMseqs2
    rules, tokenize.threads (the test config's, else the embedded default's it is merged over) for
    tokenize, 1 for the others that run here (hwbench, whose CPU rules take train.threads, is off)."""
    if rule == "tokenize":
        embedded = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        return config["tokenize"].get("threads", embedded["tokenize"]["threads"])
    return config["cluster"]["threads"] if rule in ("cluster", "downstream_leakage") else 1


def test_jobs_got_the_resources_the_rules_and_profile_promise(slurm_run):
    """Sizes (mem_mb, runtime, gpu) come from the rules, placement (partition, CPUs per GPU) from the
    profile: the dry run under the same profiles plans both, and sacct shows what each job got."""
    config = yaml.safe_load(slurm_run["config"].read_text())
    site = shipped_profile()["set-resources"]
    planned = {rule: res for rule, _, res in slurm_run["resources"]}  # the last job of each rule
    assert planned["cluster"]["mem_mb"] == "4000" and planned["validate"]["mem_mb"] == "8000"  # rules/*.smk
    for job in slurm_run["jobs"]:
        rule, tres = job["rule"], job["tres"]
        res = planned[rule]
        assert job["Partition"] == res["slurm_partition"], job
        if int(res.get("gpu", 0)):  # train, evaluate, finetune: GPU partition, one GPU, cpus_per_gpu CPUs
            assert res["slurm_partition"] == "gpu"
            assert tres.get("gres/gpu") == res["gpu"], job
            assert int(tres["cpu"]) == site[rule]["cpus_per_gpu"] * int(res["gpu"]), job
        else:
            assert "gres/gpu" not in tres, job
            assert int(tres["cpu"]) == expected_threads(rule, config), job
        if rule == "train":  # per run size (plmscale.settings.job_resources): here 1 device
            assert res["gpu"] == res["devices"] == "1", res
            assert mem_mb(tres["mem"]) >= 1000 and minutes(job["Timelimit"]) >= 1, job
        else:
            assert mem_mb(tres["mem"]) == int(res["mem_mb"]), job
            assert minutes(job["Timelimit"]) == int(res["runtime"]), job


def test_outputs_exist_and_second_run_plans_nothing(slurm_run):
    workdir = slurm_run["workdir"]
    for path in ("results/summary.json", "results/downstream/results.csv", "results/fits/mlm.json"):
        assert (workdir / path).stat().st_size > 0, path
    assert len(list((workdir / "results/runs/mlm").glob("*/*/done.json"))) == 3
    assert len(list((workdir / "results/figures").glob("mlm_*.png"))) >= 1
    assert any((workdir / "logs/slurm").rglob("*")) or "slurm-keep-successful-logs" in shipped_profile()
    proc = snakemake(workdir, slurm_run["config"], "-n", *slurm_run["profiles"])
    assert "Nothing to be done" in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------------
# TIMEOUT -> resume.  Activates once the trainer checkpoints (workflow/plmscale/checkpoint.py), logs
# `resuming from checkpoint <dir> (step <N>)`, saves on SIGTERM and has a `runtime` resource on train.
RESUME_READY = (REPO / "workflow" / "plmscale" / "checkpoint.py").exists()
# One CLM run on shape c whose length is set from this machine's measured speed: hosts differ a lot, so no
# fixed budget both outlasts SLURM's 1-minute minimum limit everywhere and finishes inside the timeouts
# everywhere.  A short calibration run times the trainer first.  Every training here runs alone: two torch
# processes of 2 threads each on 2 cores ran ~30x slower than one (measured), which made timings meaningless.
RESUME_SHAPE = "c"
CALIBRATION_FLOPS = 3.0e10  # ~730 steps of shape c at 256 tokens/step
RESUME_SOLO_SECONDS = 150  # more than SLURM's kill (1-min limit, checked every <=30 s) plus startup
RESUME_THREADS = 2  # both runs use the same torch threads, so their float reductions match exactly


def resume_budget(calibration: dict) -> float:
    """FLOPs for RESUME_SOLO_SECONDS of training at the calibration run's speed (steps are linear in C)."""
    seconds_per_step = calibration["wall_seconds"] / calibration["num_steps"]
    steps = RESUME_SOLO_SECONDS / seconds_per_step
    flops = calibration["flops_budget"] * steps / calibration["num_steps"]
    return float(f"{flops:.1e}")  # two significant digits: a readable budget label


def train_locally(workdir: Path, config: Path) -> dict:
    """Train the config's one run in workdir on this machine, return its done.json, and remove the run, its
    checkpoints and its log, so that the next run in workdir starts from nothing but the data stage."""
    threads = f"train={RESUME_THREADS}"
    snakemake(workdir, config, "--cores", "2", "runs", "--set-threads", threads, timeout=900)
    (done_path,) = (workdir / "results/runs").glob("*/*/*/done.json")
    done = json.loads(done_path.read_text())
    run = done_path.parent.relative_to(workdir / "results/runs")
    shutil.rmtree(done_path.parent)
    shutil.rmtree(workdir / "results/checkpoints" / run, ignore_errors=True)
    (workdir / "logs/train" / run).with_suffix(".log").unlink()
    return done


@pytest.mark.skipif(not RESUME_READY, reason="no trainer checkpoints yet (workflow/plmscale/checkpoint.py)")
def test_timeout_resumes_from_checkpoint_with_the_uninterrupted_loss(slurm_cluster, tmp_path):
    # no early self-stop before the limit (if the trainer supports it): SLURM's SIGTERM at 1 minute -> TIMEOUT
    schema = (REPO / "config" / "schema.yaml").read_text()
    train = {k: v for k, v in {"stop_before_limit": False, "checkpoint_every": 20}.items() if k in schema}
    workdir = tmp_path / "study"
    workdir.mkdir()

    def config_for(flops: float) -> Path:
        folder = tmp_path / flops_label(flops)
        folder.mkdir()
        grid = {"objectives": ["clm"], "budgets": [{"flops": flops, "shapes": [RESUME_SHAPE]}]}
        return small_config(folder, train=train, **grid)

    calibration_config = config_for(CALIBRATION_FLOPS)
    snakemake(workdir, calibration_config, "--cores", "2", "data")  # the data stage locally, once
    calibration = train_locally(workdir, calibration_config)
    flops = resume_budget(calibration)
    config = config_for(flops)
    reference = train_locally(workdir, config)  # the uninterrupted run, on this machine
    print(
        f"\ncalibration: {calibration['num_steps']} steps in {calibration['wall_seconds']:.1f} s; "
        f"budget {flops:.2g} FLOPs: {reference['num_steps']} steps in {reference['wall_seconds']:.1f} s"
    )
    overlay = site_overlay(tmp_path, {
        "set-resources": {**shipped_profile()["set-resources"], "train": {
            **shipped_profile()["set-resources"]["train"], "runtime": "1 if attempt == 1 else 30"}},
        "set-threads": {**shipped_profile()["set-threads"], "train": RESUME_THREADS},
        "retries": 2, "slurm-init-seconds-before-status-checks": 1,
    })  # fmt: skip
    start = datetime.now() - timedelta(seconds=2)
    snakemake(workdir, config, "--profile", str(PROFILE), "--profile", str(overlay), "runs", timeout=1500)
    train_jobs = [j for j in sacct_since(start, workdir) if j["rule"] == "train"]
    states = [j["State"] for j in train_jobs]
    assert states[0] == "TIMEOUT" and states[-1] == "COMPLETED", (
        f"{states}: the first attempt must hit its 1-minute limit; raise RESUME_SOLO_SECONDS if it finished"
    )
    log = next((workdir / "logs/train").rglob("*.log")).read_text()
    assert re.search(r"resuming from checkpoint \S+ \(step \d+\)", log), log[-3000:]
    (done_path,) = (workdir / "results/runs").glob("*/*/*/done.json")
    resumed = json.loads(done_path.read_text())
    assert resumed["resumed_from_step"] > 0
    assert resumed["final_val_loss"] == reference["final_val_loss"]
    assert resumed["final_train_loss"] == reference["final_train_loss"]
