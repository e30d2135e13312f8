"""Snakemake entry point: materialise an embedded protein source (see plmscale.sources)."""

from plmscale.snake import logged
from plmscale.sources import materialise_embedded

with logged(snakemake.log[0]):
    n = materialise_embedded(snakemake.params.name, snakemake.output[0])
    print(f"{snakemake.params.name}: wrote {n} proteins to {snakemake.output[0]}")
