"""Snakemake entry point: one accuracy table over all MLM runs (see plmscale.downstream)."""

from plmscale.fitting import probe_table
from plmscale.snake import logged

with logged(snakemake.log[0]):
    print(probe_table(list(snakemake.input.probes), list(snakemake.input.evals), snakemake.output[0]))
