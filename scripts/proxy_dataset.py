"""Snakemake entry point: the embedded sample's proxy localization task (see plmscale.downstream)."""

from plmscale.downstream import proxy_dataset
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    report = proxy_dataset(
        list(snakemake.input.valid),
        list(snakemake.input.test),
        snakemake.output.data,
        snakemake.output.report,
        window=p.window,
        threshold=p.threshold,
        max_proteins=p.max_proteins,
    )
    print(report)
