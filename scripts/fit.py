"""Snakemake entry point: run tables and scaling-law fits of one objective (see plmscale.fitting)."""

from plmscale.fitting import fit_objective
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    fit_objective(
        list(snakemake.input.evals), list(snakemake.input.dones), list(snakemake.input.metrics),
        runs_out=snakemake.output.runs, curves_out=snakemake.output.curves, fits_out=snakemake.output.fits,
        objective=snakemake.wildcards.objective, approach1_bins=p.approach1_bins,
        approach2_exclude_edge=p.approach2_exclude_edge,
        approach3_grid=p.approach3_grid, huber_delta=p.huber_delta,
        n_bootstrap=p.n_bootstrap, seed=p.seed,
    )  # fmt: skip
