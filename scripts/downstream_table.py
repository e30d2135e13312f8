"""Snakemake entry point: the downstream results and data-set tables (plmscale.downstream_results)."""

import polars as pl
from plmscale.downstream_results import datasets_table, results_table
from plmscale.snake import logged

with logged(snakemake.log[0]):
    pl.Config.set_tbl_cols(20)
    print(results_table(list(snakemake.input.results), snakemake.output.results))
    print(
        datasets_table(
            list(snakemake.input.reports), list(snakemake.input.leakage), snakemake.output.datasets
        )
    )
