"""Snakemake entry point: the downstream probe figure (see plmscale.plots)."""

from plmscale.plots import plot_downstream
from plmscale.snake import logged

with logged(snakemake.log[0]):
    plot_downstream(snakemake.input[0], snakemake.output.png, snakemake.output.svg, dpi=snakemake.params.dpi)
