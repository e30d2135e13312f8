"""Snakemake entry point: downstream accuracy against pre-training compute (plmscale.downstream_plots)."""

from plmscale.downstream_plots import downstream_compute_figure
from plmscale.snake import logged

with logged(snakemake.log[0]):
    downstream_compute_figure(
        snakemake.input[0], snakemake.output.png, snakemake.output.svg, dpi=snakemake.params.dpi
    )
