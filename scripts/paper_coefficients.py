"""Snakemake entry point: the coefficient table, each approach with CIs, next to the paper's exponents."""

from plmscale.paper import coefficient_table, extrapolation_table, method_steps_table
from plmscale.snake import logged

with logged(snakemake.log[0]):
    print(coefficient_table(list(snakemake.input), snakemake.output.csv, snakemake.output.md))
    print(extrapolation_table(list(snakemake.input), snakemake.output.extrapolation))
    for row in method_steps_table(list(snakemake.input), snakemake.output.method_steps):
        print(row)
