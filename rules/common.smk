# Shared helpers: config validation at parse time, the training grid, paths and code digests.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))  # the package, also without `pip install`

# Jobs import the package from this checkout as well: under --sdm conda a script runs the
# env's python, which has the dependencies (envs/*.yaml) but not plmscale itself.  Shell rules run PYTHON:
# the conda env's `python` there, else the interpreter running Snakemake (its venv, activated or not).
import os as _os
from snakemake_interface_executor_plugins.settings import DeploymentMethod as _DeploymentMethod

_PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
if _PACKAGE_DIR not in _os.environ.get("PYTHONPATH", "").split(_os.pathsep):
    # set, not read (snakemake --lint's envvars check is about variables a workflow requires)
    _paths = [_PACKAGE_DIR, _os.environ.get("PYTHONPATH")]
    _os.environ.update(PYTHONPATH=_os.pathsep.join(p for p in _paths if p))
CONDA = _DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PYTHON = "python" if CONDA else sys.executable

from plmscale.config import check_data_config, load_study, validate_config
from plmscale.config_merge import study_config
from plmscale import provenance
from plmscale.provenance import code_digest
from plmscale.split import SPLITS
from plmscale.tokenize import split_shards

# the study: the user's layer (--configfile files, then --config) merged over the embedded defaults
config.clear()
_defaults = Path(workflow.basedir) / "config" / "config.yaml"
config.update(study_config(workflow.config_settings.overwrite_config, _defaults))
validate_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
check_data_config(config)
STUDY = load_study(config)
POINTS = STUDY.points()
SOURCES = sorted(config["sources"])
ACTIVE_SPLITS = [s for s in SPLITS if config["split"]["fractions"].get(s, 0) > 0]
SHARDS = {
    s: split_shards(config["tokenize"]["shards"], config["split"]["fractions"], s) for s in ACTIVE_SPLITS
}
SCRIPTS_DIR = Path(workflow.basedir) / "scripts"


def script_code(script):
    """Digest of the package code scripts/<script>.py runs, imports followed (plmscale.provenance): an edit
    to a module reruns the rules that import it, directly or not, and no others."""
    return provenance.script_code(script, SCRIPTS_DIR)


wildcard_constraints:
    objective="clm|mlm",
    budget=r"[0-9.]+e[0-9]+",
    shape=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    source=r"[A-Za-z0-9_]+",
    split="train|valid|test",
    shard=r"[0-9]+",


def source_fasta(wildcards):
    spec = config["sources"][wildcards.source]
    folder = spec["kind"] if spec["kind"] in ("embedded", "fasta", "mmseqs_db", "subtract") else "download"
    return f"resources/{folder}/{wildcards.source}.fasta"


def token_sources(split, sources=None):
    """The token directories of a split, one per source (all, in sorted order, or ``sources``): rule
    tokenize's outputs, what training and evaluation read (each lists its shards in its manifest.json)."""
    return [f"results/tokens/{split}/{source}" for source in sources or SOURCES]


def split_fastas(split):
    """The FASTA files of one split, one per source, in sorted source order."""
    return [f"results/split/{split}/{source}.fasta" for source in SOURCES]


def run_dir(point):
    return f"results/runs/{point.run_id}"


def run_file(point, name):
    return f"{run_dir(point)}/{name}"


def eval_file(point):
    return f"results/eval/{point.run_id}.json"


def points_of(objective):
    """The IsoFLOP runs of an objective (every replicate): the scaling laws are fitted to these."""
    return [p for p in STUDY.isoflop_points() if p.objective == objective]


def point_of(wildcards):
    return STUDY.point(wildcards.objective, wildcards.budget, wildcards.shape)


def mask_ratio(wildcards):
    return config["train"]["mlm"]["mask_ratio"] if wildcards.objective == "mlm" else 0.0


FIGURES = ("isoflop", "optimal_allocation", "loss_vs_compute", "learning_curves")


def final_outputs():
    out = []
    for objective in STUDY.objectives:
        out.append(f"results/fits/{objective}.json")
        out += [f"results/figures/{objective}_{fig}.{ext}" for fig in FIGURES for ext in ("png", "svg")]
    if downstream_enabled():
        out += ["results/downstream/results.csv", "results/figures/downstream_compute.png"]
    out += hwbench_outputs()
    out += law_outputs()
    out.append("results/summary.json")
    out.append("results/report/landing.html")
    return out


# ---- Functions of the training, source, law, downstream and hardware-benchmark rules (snakemake --lint:
# functions live here, rules in their files).  They read the globals and imports those files set up at
# parse time: TRANSFER_POINTS (rules/laws.smk), DS, MODELS (rules/downstream.smk), HW (rules/hwbench.smk).
import json as _json

# rules/train.smk (TrainJob, TrainSource, job_resources, point_settings: plmscale.settings)
import shlex


def launch_prefix(launcher):
    """Launch prefix with `{devices}` standing for the job's process count, e.g.
    `torchrun --standalone --nproc_per_node={devices}` or `srun`; torchrun gets --no-python because the
    command it wraps is the python interpreter."""
    launcher = str(launcher or "").strip()
    words = launcher.split()
    is_torchrun = bool(words) and (Path(words[0]).name == "torchrun" or "torch.distributed.run" in words)
    if is_torchrun and "--no-python" not in words and "--no_python" not in words:
        launcher += " --no-python"
    if words and words[0] == "torchrun":  # the environment's own torchrun, also when it is not on PATH
        launcher = f"{shlex.quote(PYTHON)} -m torch.distributed.run{launcher.removeprefix('torchrun')}"
    # {devices} becomes the shell variable the command exports from the job's `devices` resource; the
    # launcher is referenced by name in the command, so changing it does not change the rule's code
    return launcher.replace("{devices}", "${PLMSCALE_DEVICES}")


def train_job(wildcards):
    """The job's TrainJob as JSON: run settings (the rerun trigger) plus input and output locations."""
    point = point_of(wildcards)
    alone = point.source is not None  # a repetition run on one source (plmscale.variants)
    names = [point.source] if alone else SOURCES
    job = TrainJob(
        run_id=point.run_id,
        run=point_settings(config, point),
        train_dirs=tuple(token_sources("train", names)),
        valid_dirs=tuple(token_sources("valid")),
        out_dir=run_dir(point),
        checkpoint_dir=f"results/checkpoints/{point.run_id}",
        sources=tuple(
            TrainSource(
                name,
                tuple(token_sources("train", [name])),
                None if alone else config["sources"][name].get("proportion"),
            )
            for name in names
        ),
    )
    return _json.dumps(job.to_dict(), sort_keys=True)


def train_resources(wildcards):
    point = point_of(wildcards)
    return job_resources(config, point_settings(config, point))


def init_weights(wildcards):
    """A transfer run waits for its source run's final weights (plmscale.variants)."""
    point = point_of(wildcards)
    return [] if point.init_from is None else [f"results/runs/{point.init_from}/model/model.safetensors"]


# rules/sources.smk (archive_source: plmscale.mmseqs_sources, imported there)
def _archive_spec(wildcards):
    return archive_source(config["sources"], wildcards.archive)


def _from_spec(wildcards):
    return config["sources"][wildcards.source]["from"]


# rules/laws.smk
def scratch_of(point):
    """The from-scratch IsoFLOP run a transfer or repetition run is compared with (same objective, budget,
    shape; replicate 0)."""
    return STUDY.make_point(point.objective, point.flops, point.shape_name)


def repetition_runs(objective):
    """An objective's repetition runs and their uncapped references, each once."""
    runs = [p for p in STUDY.repetition_points() if p.objective == objective]
    references = {scratch_of(p).run_id: scratch_of(p) for p in runs}
    return runs + list(references.values())


def law_outputs():
    out = []
    if TRANSFER_POINTS:
        out += ["results/fits/transfer_law.json", "results/figures/transfer_law.png"]
    for objective in sorted({p.objective for p in STUDY.repetition_points()}):
        out += [f"results/fits/{objective}_repetition.json", f"results/figures/{objective}_repetition.png"]
    return out


# rules/downstream.smk
def downstream_enabled():
    return DS.enabled and bool(DS.datasets) and bool(MODELS) and "test" in ACTIVE_SPLITS


def finetune_outputs():
    return [
        f"results/downstream/{d}/{m}/{name}.json" for d in DS.datasets for m in DS.methods for name in MODELS
    ]


def model_files(name):
    """The files a model's jobs wait for: a run's weights and done.json; none for an external checkpoint
    (its directory is checked by the job, with an error naming downstream.models.<name>)."""
    spec = MODELS[name]
    if spec.kind != "own":
        return []
    return [f"{Path(spec.path).parent}/done.json", f"{spec.path}/model.safetensors"]


def model_inputs(wildcards):
    return model_files(wildcards.model)


def finetune_paths(method, model):
    """One classifier job's outputs, per data set: results/downstream/{dataset}/{method}/{model}.json and
    .head.pt (dict: dataset -> (result, head))."""
    return {
        d: (
            f"results/downstream/{d}/{method}/{model}.json",
            f"results/downstream/{d}/{method}/{model}.head.pt",
        )
        for d in DS.datasets
    }


def finetune_job(wildcards):
    """The job's run settings as JSON (the rerun trigger): the model, the method's settings, and one task per
    data set (its Parquet file, classes and outputs)."""
    tasks = [
        {
            "dataset": d, "data": f"results/downstream/data/{d}.parquet", "n_classes": DS.n_classes(d),
            "output": result, "head": head,
        }
        for d, (result, head) in finetune_paths(wildcards.method, wildcards.model).items()
    ]  # fmt: skip
    job = {
        "model": MODELS[wildcards.model].to_dict(), "settings": DS.settings[wildcards.method].to_dict(),
        "limits": DS.limits, "tasks": tasks,
    }  # fmt: skip
    return _json.dumps(job, sort_keys=True)


# rules/hwbench.smk
def hwbench_outputs():
    if not HW.enabled:
        return []
    return [
        "results/hwbench/inference.csv",
        "results/hwbench/finetune.csv",
        "results/figures/hwbench_inference_time.png",
    ]


def hwbench_inputs(kind):
    """The inputs of hwbench_<kind>_<device>; none while the benchmark is off (its rules exist for every
    device, so that profiles can name them, but are never requested then)."""
    if not HW.enabled:
        return {}
    data = f"results/downstream/data/{HW.dataset}.parquet"
    if kind == "infer":
        return {"data": data, "head": f"results/downstream/{HW.dataset}/frozen/{HW.model}.head.pt"}
    return {"data": data, "model": model_files(HW.model)}


def hwbench_model():
    return MODELS[HW.model] if HW.enabled else None


def hwbench_job(device, kind):
    """The benchmark's settings as JSON (the rerun trigger: a change re-measures)."""

    def job(wildcards):
        common = {
            "model": hwbench_model().to_dict(), "dataset": HW.dataset,
            "data": f"results/downstream/data/{HW.dataset}.parquet", "n_classes": DS.n_classes(HW.dataset),
            "device": device, "precision": HW.precision,
        }  # fmt: skip
        if kind == "infer":
            return _json.dumps(
                {
                    **common, "head": f"results/downstream/{HW.dataset}/frozen/{HW.model}.head.pt",
                    "max_length": HW.max_length, "warmup": HW.warmup, "paddings": list(HW.paddings),
                    "compile": HW.compile, "hpu_graphs": HW.hpu_graphs,
                    "limits": {"test": HW.max_sequences}, "output": f"results/hwbench/infer/{device}.json",
                },
                sort_keys=True,
            )  # fmt: skip
        return _json.dumps(
            {
                **common, "n_devices": int(wildcards.n), "epochs": HW.epochs,
                "settings": hwbench_settings(HW, config["train"]["seed"]).to_dict(),
                "limits": {"train": HW.max_samples},
                "output": f"results/hwbench/finetune/{device}/{wildcards.n}.json",
            },
            sort_keys=True,
        )  # fmt: skip

    return job


# rules/report.smk
def paper_figure_facts():
    """The paper figures' facts files (plmscale.figure_style): <objective>_<figure>.json, <figure>.json."""
    keys = [f"{o}_{fig}" for o in PAPER_OBJECTIVES for fig in PAPER_FIGURES] + list(PAPER_EXTRA_FIGURES)
    return [f"results/paper/figures/{key}.json" for key in keys]
