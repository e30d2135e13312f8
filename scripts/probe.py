"""Snakemake entry point: linear probe on one frozen MLM encoder (see plmscale.downstream).

The device and precision are execution settings read from the config here, not rule params, so changing
them reruns nothing (train.device: auto|cpu|cuda|hpu, train.precision: fp32|bf16).
"""

from pathlib import Path

from plmscale.downstream import probe_run
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    train_config = snakemake.config.get("train", {})
    probe_run(
        str(Path(snakemake.input.config).parent), snakemake.input.labels, snakemake.output[0],
        context=p.context, l2=p.l2, seed=p.seed, threads=snakemake.threads,
        device=train_config.get("device", "auto"), precision=train_config.get("precision", "fp32"),
    )  # fmt: skip
