"""Snakemake entry point: the hardware benchmark's figures (plmscale.hwbench_plots)."""

from plmscale.hwbench_plots import hwbench_figures
from plmscale.snake import logged

with logged(snakemake.log[0]):
    speeds = hwbench_figures(
        snakemake.input.inference,
        snakemake.input.finetune,
        dict(snakemake.output.items()),
        reference=snakemake.params.reference,
        dpi=snakemake.params.dpi,
    )
    print(speeds)
