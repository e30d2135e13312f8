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

# the rules' functions (train_job, train_resources, init_weights, launch_prefix) are in rules/common.smk

# the execution keys of train (with the train.by_size tiers): the job picks its size's entry itself
TRAIN_EXECUTION = _json.dumps(execution_config(config), sort_keys=True)
TRAIN_PYTHON = PYTHON  # rules/common.smk: the conda env's python under --sdm conda
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
        train=token_sources("train"),
        valid=token_sources("valid"),
        init=init_weights,
    output:
        config="results/runs/{objective}/{budget}/{shape}/model/config.json",
        weights="results/runs/{objective}/{budget}/{shape}/model/model.safetensors",
        metrics="results/runs/{objective}/{budget}/{shape}/metrics.parquet",
        done="results/runs/{objective}/{budget}/{shape}/done.json",
    log:
        "logs/train/{objective}/{budget}/{shape}.log",
    conda:
        "../envs/python.yaml"
    threads: config["train"]["threads"]
    resources:
        devices=lambda w: train_resources(w).devices,
        gpu=lambda w: train_resources(w).gpu,
        mem_mb=lambda w, attempt: train_resources(w).mem_mb * attempt,
        runtime=lambda w, attempt: min(
            config["train"]["runtime_max"], train_resources(w).runtime_min * attempt
        ),
    params:
        job=train_job,
        code=code_digest("train_cli"),
    # snakemake --lint: TRAIN_LAUNCHER, TRAIN_PYTHON, TRAIN_PACKAGE_DIR, TRAIN_EXECUTION, TRAIN_TIME_MARGIN_S
    # are globals on purpose: execution settings (see the top of this file); as params, changing one would
    # rerun every training run.
    shell:
        TRAIN_SHELL


rule evaluate:
    input:
        config="results/runs/{objective}/{budget}/{shape}/model/config.json",
        weights="results/runs/{objective}/{budget}/{shape}/model/model.safetensors",
        done="results/runs/{objective}/{budget}/{shape}/done.json",
        valid=token_sources("valid"),
    output:
        "results/eval/{objective}/{budget}/{shape}.json",
    log:
        "logs/evaluate/{objective}/{budget}/{shape}.log",
    conda:
        "../envs/python.yaml"
    threads: config["train"]["threads"]
    resources:
        gpu=0 if config["train"]["device"] == "cpu" else 1,
        mem_mb=16000,
        runtime=60,
    params:
        valid_dirs=token_sources("valid"),
        context=config["train"]["context"],
        mask_ratio=mask_ratio,
        max_tokens=config["evaluate"]["max_tokens"],
        batch_rows=config["evaluate"]["batch_rows"],
        seed=config["evaluate"]["seed"],
        code=script_code("evaluate"),
    # train.device / train.precision are execution settings: the script reads them from the config, not
    # params, so changing them reruns nothing.  A device the job did not get fails (no CPU fallback).
    script:
        "../scripts/evaluate.py"
