"""Snakemake entry point: the CLM<->MLM transfer law on the published logs (see plmscale.paper)."""

from plmscale.paper import fit_paper_transfer
from plmscale.snake import logged

with logged(snakemake.log[0]):
    fit_paper_transfer(
        snakemake.input[0],
        snakemake.output.json,
        snakemake.output.csv,
        n_points=snakemake.params.n_points,
    )
