"""Snakemake entry point: tidy tables of the published logs (see plmscale.paper)."""

from pathlib import Path

from plmscale.paper import write_tables
from plmscale.snake import logged

with logged(snakemake.log[0]):
    write_tables(
        Path(snakemake.input[0]).parent, dict(snakemake.output.items()), last_k=snakemake.params.last_k
    )
