"""Snakemake entry point: the study's headline numbers in one JSON (see plmscale.fitting)."""

from plmscale.fitting import write_summary
from plmscale.snake import logged

with logged(snakemake.log[0]):
    write_summary(list(snakemake.input.fits), list(snakemake.input.runs), snakemake.output[0])
