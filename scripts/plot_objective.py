"""Snakemake entry point: the scaling figures of one objective (see plmscale.plots)."""

from plmscale.plots import plot_objective
from plmscale.snake import logged

with logged(snakemake.log[0]):
    plot_objective(
        snakemake.input.runs, snakemake.input.curves, snakemake.input.fits, dict(snakemake.output.items()),
        objective=snakemake.wildcards.objective, dpi=snakemake.params.dpi,
    )  # fmt: skip
