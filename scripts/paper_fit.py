"""Snakemake entry point: every approach, with bootstrap CIs, on the published logs (see plmscale.paper)."""

from pathlib import Path

from plmscale.paper import fit_paper_objective
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    fit_paper_objective(
        snakemake.input.points,
        snakemake.input.finals,
        snakemake.output[0],
        logs_root=Path(snakemake.input.manifest).parent,
        objective=snakemake.wildcards.objective,
        n_bootstrap=p.n_bootstrap,
        seed=p.seed,
        approach1_bins=p.approach1_bins,
        approach2_exclude_edge=p.approach2_exclude_edge,
        approach3_grid=p.approach3_grid,
        extrapolation_cutoff=p.extrapolation_cutoff,
    )
