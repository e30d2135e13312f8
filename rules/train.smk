# One training job per scaling point (objective x compute budget x shape), then its validation loss.
# Each job gets only scalars derived from its own slice of the config: editing one shape's lr reruns
# only that shape's runs; editing train.mlm.mask_ratio reruns only MLM runs.
#
# Training survives the cluster: checkpoints live in results/checkpoints/... (not a declared output, so
# Snakemake's cleanup of a failed job keeps them); a job stops before its runtime (minus
# train.time_margin_s), on SIGTERM or on SIGUSR1 with exit code 75 after a committed checkpoint, and the
# retry (--retries; runtime grows with the attempt) resumes from it.  The launch prefix, the checkpoint
# interval and the margin are globals, not params: changing them reruns nothing.
# Train keys for this (defaults in config/schema.yaml): launcher, checkpoint_every, time_margin_s,
# runtime_min, stop_before_limit.


def _train_launcher():
    """Launch prefix, e.g. `torchrun --standalone --nproc_per_node=4` or `srun`; torchrun gets
    --no-python because the command it wraps is the python interpreter."""
    launcher = str(config["train"].get("launcher", "") or "").strip()
    words = launcher.split()
    is_torchrun = bool(words) and (
        Path(words[0]).name == "torchrun" or "torch.distributed.run" in words
    )
    if is_torchrun and "--no-python" not in words and "--no_python" not in words:
        launcher += " --no-python"
    return launcher


TRAIN_LAUNCHER = _train_launcher()
TRAIN_PYTHON = sys.executable
TRAIN_PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
TRAIN_CHECKPOINT_EVERY = int(config["train"].get("checkpoint_every", 200))
TRAIN_TIME_MARGIN_S = int(config["train"].get("time_margin_s", 300))
TRAIN_RUNTIME_MIN = int(config["train"].get("runtime_min", 60))
TRAIN_STOP_BEFORE_LIMIT = bool(config["train"].get("stop_before_limit", True))


# The command; with train.stop_before_limit the trainer stops --time-limit-s seconds after its start:
# the job's runtime minus the margin (capped at a quarter of the runtime, for short test limits).  Without
# it the job runs into the scheduler's limit (SIGTERM -> checkpoint -> exit; SLURM records TIMEOUT).
TRAIN_SHELL = (
    "PYTHONPATH={TRAIN_PACKAGE_DIR:q}${{PYTHONPATH:+:$PYTHONPATH}} "
    "{TRAIN_LAUNCHER} {TRAIN_PYTHON:q} -m plmscale.train_cli"
    " --objective {wildcards.objective} --layers {params.layers} --width {params.width}"
    " --heads {params.heads} --flops {params.flops} --lr {params.lr} --mask-ratio {params.mask_ratio}"
    " --context {params.context} --batch-rows {params.batch_rows}"
    " --warmup-fraction {params.warmup_fraction} --min-lr-ratio {params.min_lr_ratio}"
    " --weight-decay {params.weight_decay} --beta1 {params.beta1} --beta2 {params.beta2}"
    " --grad-clip {params.grad_clip} --seed {params.seed} --eval-points {params.eval_points}"
    " --eval-max-tokens {params.eval_max_tokens} --eval-seed {params.eval_seed}"
    " --train-dirs {params.train_dirs:q} --valid-dirs {params.valid_dirs:q}"
    " --model-dir {params.model_dir:q} --metrics {output.metrics:q} --done {output.done:q}"
    " --checkpoint-dir {params.checkpoint_dir:q} --checkpoint-every {TRAIN_CHECKPOINT_EVERY}"
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
        train=token_files("train"),
        valid=token_files("valid"),
    output:
        config="results/runs/{objective}/{budget}/{shape}/model/config.json",
        weights="results/runs/{objective}/{budget}/{shape}/model/model.safetensors",
        metrics="results/runs/{objective}/{budget}/{shape}/metrics.parquet",
        done="results/runs/{objective}/{budget}/{shape}/done.json",
    params:
        train_dirs=[f"results/tokens/train/shard{k}" for k in SHARDS],
        valid_dirs=[f"results/tokens/valid/shard{k}" for k in SHARDS],
        layers=lambda w: point_of(w).shape.layers,
        width=lambda w: point_of(w).shape.width,
        heads=lambda w: point_of(w).shape.heads,
        flops=lambda w: point_of(w).flops,
        lr=shape_lr,
        mask_ratio=mask_ratio,
        context=config["train"]["context"],
        batch_rows=config["train"]["batch_rows"],
        warmup_fraction=config["train"]["warmup_fraction"],
        min_lr_ratio=config["train"]["min_lr_ratio"],
        weight_decay=config["train"]["weight_decay"],
        beta1=config["train"]["beta1"],
        beta2=config["train"]["beta2"],
        grad_clip=config["train"]["grad_clip"],
        seed=config["train"]["seed"],
        eval_points=config["train"]["eval_points"],
        eval_max_tokens=config["train"]["eval_max_tokens"],
        eval_seed=config["evaluate"]["seed"],
        model_dir=lambda w: f"results/runs/{w.objective}/{w.budget}/{w.shape}/model",
        checkpoint_dir=lambda w: f"results/checkpoints/{w.objective}/{w.budget}/{w.shape}",
        code=code_digest("train_cli"),
    threads: config["train"]["threads"]
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=lambda w, attempt: TRAIN_RUNTIME_MIN * attempt,
    log:
        "logs/train/{objective}/{budget}/{shape}.log",
    shell:
        TRAIN_SHELL


rule evaluate:
    input:
        config="results/runs/{objective}/{budget}/{shape}/model/config.json",
        weights="results/runs/{objective}/{budget}/{shape}/model/model.safetensors",
        done="results/runs/{objective}/{budget}/{shape}/done.json",
        valid=token_files("valid"),
    output:
        "results/eval/{objective}/{budget}/{shape}.json",
    params:
        valid_dirs=[f"results/tokens/valid/shard{k}" for k in SHARDS],
        context=config["train"]["context"],
        mask_ratio=mask_ratio,
        max_tokens=config["evaluate"]["max_tokens"],
        batch_rows=config["evaluate"]["batch_rows"],
        seed=config["evaluate"]["seed"],
        code=script_code("evaluate"),
    threads: config["train"]["threads"]
    log:
        "logs/evaluate/{objective}/{budget}/{shape}.log",
    script:
        "../scripts/evaluate.py"
