"""Snakemake entry point: the paper reproduction's report page (see plmscale.report_paper)."""

from pathlib import Path

from plmscale.report_paper import write_paper_landing
from plmscale.snake import logged

with logged(snakemake.log[0]):
    write_paper_landing(
        list(snakemake.input.fits),
        snakemake.input.coefficients,
        snakemake.input.method_steps,
        snakemake.output.html,
        facts={Path(p).stem: p for p in snakemake.input.facts},
        captions={Path(p).stem.removeprefix("paper_"): p for p in snakemake.output.captions},
    )
