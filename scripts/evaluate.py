"""Snakemake entry point: validation loss of one saved run (see plmscale.evaluate).

The device and precision are execution settings read from the config here, not rule params, so changing
them reruns nothing (train.device: auto|cpu|cuda|hpu, train.precision: fp32|bf16).
"""

from pathlib import Path

from plmscale.evaluate import evaluate_run
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    train_config = snakemake.config.get("train", {})
    evaluate_run(
        Path(snakemake.input.config).parent, snakemake.input.done, p.valid_dirs, snakemake.output[0],
        objective=snakemake.wildcards.objective, context=p.context, mask_ratio=p.mask_ratio,
        max_tokens=p.max_tokens, batch_rows=p.batch_rows, seed=p.seed, threads=snakemake.threads,
        device=train_config.get("device", "auto"), precision=train_config.get("precision", "fp32"),
    )  # fmt: skip
