"""Snakemake entry point: pool validated sources into one FASTA for clustering."""

from plmscale.mmseqs import pool_sources
from plmscale.snake import logged

with logged(snakemake.log[0]):
    counts = pool_sources(list(snakemake.input), list(snakemake.params.sources), snakemake.output[0])
    print(counts)
