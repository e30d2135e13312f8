# One training job per scaling point (objective x compute budget x shape), then its validation loss.
#
# The job's run settings (plmscale.settings.TrainSettings: shape, budget, batch, optimizer, schedule, seeds,
# precision) are its one param, as JSON: editing one shape's lr reruns only that shape's runs, editing
# train.mlm.mask_ratio only the MLM runs.  The execution settings (device, attention kernel, micro-batching,
# parallelism, compile, logging, checkpoint cadence) and the launcher are globals, not params: changing them
# reruns nothing, and an interrupted run resumes under the new ones.
#
# Resources per job come from the run's size (plmscale.settings.job_resources): accelerators and processes
# (train.devices or its train.by_size tier), host memory, and a runtime estimated from the run's FLOPs at
# train.expected_mfu of train.plan_peak_flops, between train.runtime_min and train.runtime_max minutes.
#
# Training survives the cluster: checkpoints live in results/checkpoints/... (not a declared output, so
# Snakemake's cleanup of a failed job keeps them); a job stops before its runtime (minus
# train.time_margin_s), on SIGTERM or on SIGUSR1 with exit code 75 after a committed checkpoint, and the
# retry (--retries; runtime grows with the attempt) resumes from it.
import json as _json
import shlex

from plmscale.settings import TrainJob, TrainSource, execution_config, job_resources, point_settings


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
        launcher = f"{shlex.quote(sys.executable)} -m torch.distributed.run" + launcher[len("torchrun") :]
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
        train_dirs=tuple(token_dirs("train", names)),
        valid_dirs=tuple(token_dirs("valid")),
        out_dir=run_dir(point),
        checkpoint_dir=f"results/checkpoints/{point.run_id}",
        sources=tuple(
            TrainSource(
                name, tuple(token_dirs("train", [name])), None if alone else config["sources"][name].get("proportion")
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


# the execution keys of train (with the train.by_size tiers): the job picks its size's entry itself
TRAIN_EXECUTION = _json.dumps(execution_config(config), sort_keys=True)
TRAIN_PYTHON = sys.executable
TRAIN_PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
TRAIN_TIME_MARGIN_S = int(config["train"]["time_margin_s"])
TRAIN_STOP_BEFORE_LIMIT = bool(config["train"]["stop_before_limit"])


# With train.stop_before_limit the trainer stops --time-limit-s seconds after its start: the job's runtime
# minus the margin (capped at a quarter of the runtime, for short test limits).  Without it the job runs into
# the scheduler's limit (SIGTERM -> checkpoint -> exit; SLURM records TIMEOUT).
TRAIN_LAUNCHER = launch_prefix(config["train"]["launcher"])
TRAIN_SHELL = (
    "export PLMSCALE_DEVICES={resources.devices}; "
    "PYTHONPATH={TRAIN_PACKAGE_DIR:q}${{PYTHONPATH:+:$PYTHONPATH}} "
    "{TRAIN_LAUNCHER} {TRAIN_PYTHON:q} -m plmscale.train_cli --job {params.job:q} --execution {TRAIN_EXECUTION:q}"
    + (
        " --time-limit-s $(( {resources.runtime} * 60 - ({TRAIN_TIME_MARGIN_S} < {resources.runtime} * 15"
        " ? {TRAIN_TIME_MARGIN_S} : {resources.runtime} * 15) ))"
        if TRAIN_STOP_BEFORE_LIMIT
        else ""
    )
    + " --threads {threads} > {log:q} 2>&1"
)


rule train:
    input:
        train="results/tokens/train/ready.json",
        valid="results/tokens/valid/ready.json",
        init=init_weights,
    output:
        config="results/runs/{objective}/{budget}/{shape}/model/config.json",
        weights="results/runs/{objective}/{budget}/{shape}/model/model.safetensors",
        metrics="results/runs/{objective}/{budget}/{shape}/metrics.parquet",
        done="results/runs/{objective}/{budget}/{shape}/done.json",
    params:
        job=train_job,
        code=code_digest("train_cli"),
    threads: config["train"]["threads"]
    resources:
        devices=lambda w: train_resources(w).devices,
        gpu=lambda w: train_resources(w).gpu,
        mem_mb=lambda w, attempt: train_resources(w).mem_mb * attempt,
        runtime=lambda w, attempt: min(config["train"]["runtime_max"], train_resources(w).runtime_min * attempt),
    log:
        "logs/train/{objective}/{budget}/{shape}.log",
    shell:
        TRAIN_SHELL


rule evaluate:
    input:
        config="results/runs/{objective}/{budget}/{shape}/model/config.json",
        weights="results/runs/{objective}/{budget}/{shape}/model/model.safetensors",
        done="results/runs/{objective}/{budget}/{shape}/done.json",
        valid="results/tokens/valid/ready.json",
    output:
        "results/eval/{objective}/{budget}/{shape}.json",
    params:
        valid_dirs=token_dirs("valid"),
        context=config["train"]["context"],
        mask_ratio=mask_ratio,
        max_tokens=config["evaluate"]["max_tokens"],
        batch_rows=config["evaluate"]["batch_rows"],
        seed=config["evaluate"]["seed"],
        code=script_code("evaluate"),
    threads: config["train"]["threads"]
    log:
        "logs/evaluate/{objective}/{budget}/{shape}.log",
    # train.device / train.precision are execution settings: the script reads them from the config, not
    # params, so changing them reruns nothing.  A device the job did not get fails (no CPU fallback).
    script:
        "../scripts/evaluate.py"
