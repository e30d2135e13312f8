"""Snakemake entry point: proxy membrane/soluble labels for the probe (see plmscale.downstream)."""

from plmscale.downstream import label_proteins
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    table = label_proteins(
        list(snakemake.input.valid), list(snakemake.input.test), snakemake.output[0], window=p.window,
        threshold=p.threshold, max_proteins=p.max_proteins,
    )  # fmt: skip
    print(table.group_by("split", "label").len().sort("split", "label"))
