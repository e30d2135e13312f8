"""Snakemake entry point: the report's landing page, its tables and the generated figure captions
(see plmscale.report_notes)."""

from plmscale.report_notes import write_landing
from plmscale.snake import logged

with logged(snakemake.log[0]):
    write_landing(
        fits=list(snakemake.input.fits),
        run_ids=list(snakemake.params.run_ids),
        budgets=list(snakemake.params.budgets),
        downstream=next(iter(snakemake.input.downstream), None),  # absent when downstream is disabled
        outputs=dict(snakemake.output.items()),
    )
