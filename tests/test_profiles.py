"""Guards for the shipped SLURM profiles (config/profiles/*): no cluster needed.

Snakemake silently ignores set-resources/set-threads entries whose rule does not exist, so a renamed rule
would quietly lose its partition and GPU.  A dry run under each profile checks what every training job asks
for.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from plmscale.config import flops_label

REPO = Path(__file__).resolve().parents[1]
PROFILES = {p.parent.name: p.parent for p in sorted((REPO / "config" / "profiles").glob("*/config.yaml"))}
PAPER = REPO / "config" / "paper.yaml"
AGGREGATE_RULES = {"all", "data", "runs", "downstream", "hwbench", "paper_figures"}  # no outputs: not jobs
GPU_RULES = ("train", "evaluate", "finetune")
HW_PARTITIONS = {"cuda": "gpu", "hpu": "gaudi"}  # hwbench_*_<device> in every profile


def run_snakemake(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env_path = f"{Path(sys.executable).parent}"
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={"PATH": f"{env_path}:/usr/bin:/bin", "HOME": str(Path.home())},  # no SLURM binaries needed
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def rules() -> set[str]:
    return set(run_snakemake("--list-rules").stdout.split())


def load(name: str) -> dict:
    return yaml.safe_load((PROFILES[name] / "config.yaml").read_text())


def test_profiles_are_shipped_and_slurm_resolves_from_the_repo_root():
    assert {"slurm", "gaudi"} <= set(PROFILES)
    link = REPO / "slurm"
    assert link.is_symlink() and link.resolve() == PROFILES["slurm"].resolve()


@pytest.mark.parametrize("name", ["slurm", "gaudi"])
def test_every_rule_named_in_a_profile_exists_and_every_job_rule_is_named(name, rules):
    profile = load(name)
    assert profile["executor"] == "slurm" and profile["retries"] >= 1 and profile["rerun-incomplete"]
    for key in ("set-resources", "set-threads"):
        unknown = set(profile[key]) - rules
        assert not unknown, f"{name}: {key} names rules that do not exist (silently ignored): {unknown}"
        missing = rules - AGGREGATE_RULES - set(profile[key])
        assert not missing, f"{name}: {key} has no entry for {missing}"
    assert rules >= AGGREGATE_RULES


def planned_resources(output: str) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(rule, wildcards, resources) of every job of a dry run."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        w = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        r = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        wildcards = dict(kv.split("=", 1) for kv in w.group(1).split(", ")) if w else {}
        resources = dict(kv.split("=", 1) for kv in r.group(1).split(", ")) if r else {}
        jobs.append((m.group(1), wildcards, resources))
    return jobs


@pytest.fixture(scope="module", params=["slurm", "gaudi"])
def paper_plan(request):
    out = run_snakemake("-n", "--profile", str(PROFILES[request.param]), "--configfile", str(PAPER))
    return request.param, planned_resources(out.stdout)


def test_paper_grid_dry_run_requests_accelerators_and_time_limits(paper_plan):
    name, jobs = paper_plan
    paper = yaml.safe_load(PAPER.read_text())
    train = [(w, r) for rule, w, r in jobs if rule == "train"]
    n_points = len(paper["grid"]["objectives"]) * sum(len(b["shapes"]) for b in paper["grid"]["budgets"])
    # the IsoFLOP grid, the paper's 10 transfer runs and the 7 source runs off its budgets
    n_transfer = sum(len(t["shapes"]) for t in paper["grid"]["transfer"])
    assert len(train) == n_points + n_transfer + 7
    budgets = {w["budget"] for w, _ in train if "-from-" not in w["shape"]}
    assert budgets >= {flops_label(float(b["flops"])) for b in paper["grid"]["budgets"]}  # every scale
    for rule, wildcards, res in jobs:
        if rule in AGGREGATE_RULES:
            continue
        assert int(float(res["runtime"])) >= 1, (rule, wildcards, res)
        assert int(res["mem_mb"]) >= 1000, (rule, wildcards, res)
        device = rule.rsplit("_", 1)[-1]
        if rule.startswith("hwbench_") and device in HW_PARTITIONS:
            # one run compares the devices: each device's jobs go to its own partition, with n devices
            assert res["slurm_partition"] == HW_PARTITIONS[device], (rule, res)
            expect = wildcards["n"] if "finetune" in rule else "1"
            assert res["gpu"] == expect and "cpus_per_gpu" in res, (rule, wildcards, res)
        elif rule in GPU_RULES:
            # the accelerator partition; train asks per run size (gpu = processes), evaluate/finetune for one
            partition = "gpu" if name == "slurm" else "gaudi"
            assert res["slurm_partition"] == partition and "cpus_per_gpu" in res, res
            expect = res["devices"] if rule == "train" else "1"
            assert res["gpu"] == expect and int(expect) >= 1, res
        else:
            assert res["slurm_partition"] == "cpu", (rule, res)
            assert "gres" not in res and res.get("gpu", "0") == "0", (rule, res)


def test_paper_grid_gives_large_shapes_the_devices_and_memory_they_need(paper_plan):
    _, jobs = paper_plan
    train = {(w["objective"], w["budget"], w["shape"]): r for rule, w, r in jobs if rule == "train"}
    small, large = train[("clm", "1e18", "s10m")], train[("mlm", "1e21", "s7.2b")]
    assert (small["gpu"], small["devices"]) == ("1", "1") and (large["gpu"], large["devices"]) == ("8", "8")
    assert int(large["mem_mb"]) > int(small["mem_mb"])
    assert int(large["runtime"]) > int(small["runtime"])  # estimated from each run's FLOPs


@pytest.mark.parametrize(("name", "device"), [("slurm", "cuda"), ("gaudi", "hpu")])
def test_profiles_ask_the_trainer_for_their_accelerator(name, device):
    """A job on an accelerator partition never trains on the host CPU: the profile sets train.device."""
    assert load(name)["config"] == [f"train={{device: {device}}}"]


def test_paper_hwbench_jobs_cover_every_device_and_count(paper_plan):
    _, jobs = paper_plan
    hw = yaml.safe_load(PAPER.read_text())["hwbench"]
    planned = {(rule, w.get("n")) for rule, w, _ in jobs if rule.startswith("hwbench_")}
    expected = {(f"hwbench_infer_{d}", None) for d in hw["devices"]}
    expected |= {(f"hwbench_finetune_{d}", str(n)) for d in hw["devices"] for n in hw["device_counts"]}
    assert expected <= planned and {"cuda", "hpu"} <= set(hw["devices"])
