"""Snakemake entry point: train one scaling point (see plmscale.train)."""

from pathlib import Path

from plmscale.flops import ModelShape
from plmscale.snake import logged
from plmscale.train import TrainSettings, train_run

with logged(snakemake.log[0]):
    p = snakemake.params
    settings = TrainSettings(
        objective=snakemake.wildcards.objective,
        shape=ModelShape(layers=p.layers, width=p.width, heads=p.heads),
        flops_budget=p.flops,
        context=p.context,
        batch_rows=p.batch_rows,
        peak_lr=p.lr,
        warmup_fraction=p.warmup_fraction,
        min_lr_ratio=p.min_lr_ratio,
        weight_decay=p.weight_decay,
        beta1=p.beta1,
        beta2=p.beta2,
        grad_clip=p.grad_clip,
        mask_ratio=p.mask_ratio,
        seed=p.seed,
        eval_points=p.eval_points,
        eval_max_tokens=p.eval_max_tokens,
        eval_seed=p.eval_seed,
    )
    train_run(
        settings,
        p.train_dirs,
        p.valid_dirs,
        model_dir=Path(snakemake.output.config).parent,
        metrics_path=Path(snakemake.output.metrics),
        done_path=Path(snakemake.output.done),
        threads=snakemake.threads,
    )
