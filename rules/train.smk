# One training job per scaling point (objective x compute budget x shape), then its validation loss.
# Each job gets only scalars derived from its own slice of the config: editing one shape's lr reruns
# only that shape's runs; editing train.mlm.mask_ratio reruns only MLM runs.


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
        code=CODE["train"],
    threads: config["train"]["threads"]
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
    log:
        "logs/train/{objective}/{budget}/{shape}.log",
    script:
        "../scripts/train.py"


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
        code=CODE["evaluate"],
    threads: config["train"]["threads"]
    log:
        "logs/evaluate/{objective}/{budget}/{shape}.log",
    script:
        "../scripts/evaluate.py"
