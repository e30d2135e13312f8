"""Guards for the shipped SLURM profiles (config/profiles/*) and the rules' own resources: no cluster needed.

Each rule declares what its jobs ask for (threads, mem_mb, runtime in minutes, gpu) in rules/*.smk; a
profile holds only site settings (partitions, account, qos, GRES style, host CPUs per accelerator, the
trainer's device, executor options).  Snakemake silently ignores set-resources/set-threads entries whose rule
does not exist, so a renamed rule would quietly lose its partition.  A dry run under each profile checks what
every job of the paper grid asks for.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from plmscale.config import flops_label

from tests.workflow_rules import declared_rules, planned_resources

REPO = Path(__file__).resolve().parents[1]
PROFILES = {p.parent.name: p.parent for p in sorted((REPO / "config" / "profiles").glob("*/config.yaml"))}
PAPER = REPO / "config" / "paper.yaml"
DEFAULT = REPO / "config" / "config.yaml"
AGGREGATE_RULES = {"all", "data", "runs", "downstream", "hwbench", "paper_figures", "paper_report"}  # no jobs
GPU_RULES = ("train", "evaluate", "finetune")
HW_PARTITIONS = {"cuda": "gpu", "hpu": "gaudi"}  # hwbench_*_<device> in every profile
ACCELERATOR_RULES = {*GPU_RULES, *(f"hwbench_{k}_{d}" for k in ("infer", "finetune") for d in HW_PARTITIONS)}
# what a profile may say per rule: where the job goes and how the site wants it asked, never its size
SITE_RESOURCES = {"slurm_partition", "slurm_account", "qos", "constraint", "slurm_extra", "cpus_per_gpu"}
SITE_RESOURCES |= {"gres"}  # a site's GRES name instead of --gpus (set with gpu: 0; see the profiles)
SIZE_RESOURCES = {"mem_mb", "mem_mib", "runtime", "gpu", "cpus_per_task", "devices", "disk_mb"}
EXECUTOR_KEYS = {
    "executor", "jobs", "retries", "rerun-incomplete", "keep-going", "latency-wait", "printshellcmds",
    "show-failed-logs", "slurm-logdir", "slurm-keep-successful-logs",
    "slurm-init-seconds-before-status-checks",
}  # fmt: skip
PROFILE_KEYS = {"default-resources", "set-resources", "set-threads", "config", *EXECUTOR_KEYS}


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
def rules():
    return declared_rules()


def load(name: str) -> dict:
    return yaml.safe_load((PROFILES[name] / "config.yaml").read_text())


def test_profiles_are_shipped_and_slurm_resolves_from_the_repo_root():
    assert {"slurm", "gaudi"} <= set(PROFILES)
    link = REPO / "slurm"
    assert link.is_symlink() and link.resolve() == PROFILES["slurm"].resolve()


def test_every_job_rule_declares_its_resources_in_the_rule(rules):
    """mem_mb and runtime (minutes) on every rule that becomes a job; gpu on every accelerator rule."""
    jobs = {name for name, rule in rules.items() if rule.is_job}
    assert jobs >= {"train", "evaluate", "cluster", "validate", "fit", "paper_plots", "finetune"}
    assert not (jobs & AGGREGATE_RULES)
    missing = {
        name: rules[name].resources for name in jobs if {"mem_mb", "runtime"} - set(rules[name].resources)
    }
    assert not missing, f"rules without mem_mb/runtime in rules/*.smk: {missing}"
    for name in ACCELERATOR_RULES:
        assert "gpu" in rules[name].resources, (name, rules[name].resources)


@pytest.mark.parametrize("name", ["slurm", "gaudi"])
def test_profiles_hold_only_site_settings_for_rules_that_exist(name, rules):
    profile = load(name)
    assert set(profile) <= PROFILE_KEYS, f"{name}: keys that are not site or executor settings"
    assert profile["executor"] == "slurm" and profile["retries"] >= 1 and profile["rerun-incomplete"]
    assert set(profile["default-resources"]) <= SITE_RESOURCES, profile["default-resources"]
    for key in ("set-resources", "set-threads"):
        unknown = set(profile[key]) - set(rules)
        assert not unknown, f"{name}: {key} names rules that do not exist (silently ignored): {unknown}"
    for rule, res in profile["set-resources"].items():
        assert set(res) <= SITE_RESOURCES and not set(res) & SIZE_RESOURCES, (name, rule, res)
    # every accelerator rule is placed on its partition; nothing else leaves the CPU partition
    assert set(profile["set-resources"]) == ACCELERATOR_RULES
    # threads in a profile: only the host CPUs per accelerator, the same number the job reserves
    assert set(profile["set-threads"]) == ACCELERATOR_RULES
    for rule, threads in profile["set-threads"].items():
        assert threads == profile["set-resources"][rule]["cpus_per_gpu"], (name, rule)


@pytest.fixture(scope="module", params=["slurm", "gaudi"])
def paper_plan(request):
    out = run_snakemake("-n", "--profile", str(PROFILES[request.param]), "--configfile", str(PAPER))
    return request.param, planned_resources(out.stdout)


def test_paper_grid_dry_run_requests_accelerators_and_time_limits(paper_plan, rules):
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
        if rule in AGGREGATE_RULES or rules[rule].local:  # localrules run inside Snakemake, not as jobs
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


def test_paper_grid_fine_tunes_the_runs_of_downstream_budgets_and_the_external_models(paper_plan):
    """downstream.budgets: classifiers for the runs at one budget per decade (both objectives), and for the
    external checkpoints; one job per (method, model)."""
    _, jobs = paper_plan
    paper = yaml.safe_load(PAPER.read_text())
    ds = paper["downstream"]
    expected = set(ds["models"]) | {
        f"{o}_{flops_label(float(b['flops']))}_{shape}"
        for o in ds["objectives"]
        for b in paper["grid"]["budgets"]
        if float(b["flops"]) in [float(x) for x in ds["budgets"]]
        for shape in b["shapes"]
    }
    finetune = [w for rule, w, _ in jobs if rule == "finetune"]
    assert {w["model"] for w in finetune} == expected and len(expected) == 65
    assert len(finetune) == len(expected) * len(ds["methods"])


def test_paper_grid_jobs_ask_what_their_rules_and_the_study_config_say(paper_plan):
    """The sizes come from the rules (and the study config where a rule reads it), not from the profile:
    config/paper.yaml's cluster.mem_mb reaches the clustering jobs; fixed rule values reach the others."""
    _, jobs = paper_plan
    paper = yaml.safe_load(PAPER.read_text())
    by_rule = {rule: res for rule, _, res in jobs}
    for rule in ("cluster", "downstream_leakage"):
        assert int(by_rule[rule]["mem_mb"]) == paper["cluster"]["mem_mb"] == 256000, (rule, by_rule[rule])
        assert by_rule[rule]["runtime"] == "720", by_rule[rule]
    # values written in rules/*.smk (minutes for runtime; finetune: 12 h per data set, the paper has 2)
    expected = {
        "validate": ("8000", "120"), "split": ("16000", "120"), "evaluate": ("16000", "60"),
        "finetune": ("32000", "1440"), "hwbench_finetune_hpu": ("64000", "240"), "summary": ("2000", "10"),
    }  # fmt: skip
    for rule, (mem, runtime) in expected.items():
        assert (by_rule[rule]["mem_mb"], by_rule[rule]["runtime"]) == (mem, runtime), (rule, by_rule[rule])


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
