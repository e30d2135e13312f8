"""Snakemake entry point: linear probe on one frozen MLM encoder (see plmscale.downstream)."""

from pathlib import Path

from plmscale.downstream import probe_run
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    probe_run(
        str(Path(snakemake.input.config).parent), snakemake.input.labels, snakemake.output[0],
        context=p.context, l2=p.l2, seed=p.seed, threads=snakemake.threads,
    )  # fmt: skip
