"""Snakemake entry point: the paper's figures from the published logs (see plmscale.paper_plots)."""

from plmscale.paper_plots import plot_paper
from plmscale.snake import logged

with logged(snakemake.log[0]):
    plot_paper(dict(snakemake.input.items()), dict(snakemake.output.items()), dpi=snakemake.params.dpi)
