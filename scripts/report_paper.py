"""Snakemake entry point: the paper reproduction's report page (see plmscale.report_paper)."""

from plmscale.report_paper import write_paper_landing
from plmscale.snake import logged

with logged(snakemake.log[0]):
    write_paper_landing(
        list(snakemake.input.fits),
        snakemake.input.coefficients,
        snakemake.input.method_steps,
        snakemake.output.html,
    )
