"""Snakemake entry point: the hardware benchmark's tables, CSV and Markdown (plmscale.hwbench)."""

import json
from pathlib import Path

import polars as pl
from plmscale.atomic import atomic_path, write_text_atomic
from plmscale.hwbench import scaling_table
from plmscale.hwbench_plots import hwbench_table_markdown
from plmscale.snake import logged

with logged(snakemake.log[0]):
    inference = [row for path in snakemake.input.infer for row in json.loads(Path(path).read_text())["rows"]]
    finetune = scaling_table([json.loads(Path(path).read_text()) for path in snakemake.input.finetune])
    for row in finetune:
        row["epoch_seconds"] = " ".join(f"{s:.4f}" for s in row["epoch_seconds"])
    for rows, output in ((inference, snakemake.output.inference), (finetune, snakemake.output.finetune)):
        with atomic_path(output) as tmp:
            pl.DataFrame(rows, infer_schema_length=None).write_csv(tmp)
    text = hwbench_table_markdown(
        snakemake.output.inference, snakemake.output.finetune, reference=snakemake.params.reference
    )
    write_text_atomic(snakemake.output.markdown, text)
    print(text)
