"""Snakemake entry point: check and convert a downloaded data set to one Parquet (plmscale.locconvert)."""

import json
from pathlib import Path

from plmscale.locconvert import convert_dataset
from plmscale.locdata import TableDataset
from plmscale.snake import logged

with logged(snakemake.log[0]):
    spec = TableDataset.from_config(snakemake.wildcards.dataset, json.loads(snakemake.params.spec))
    downloaded = json.loads(Path(snakemake.input[0]).read_text())["files"]
    convert_dataset(
        spec,
        {split: entry["path"] for split, entry in downloaded.items()},
        snakemake.output.data,
        snakemake.output.report,
    )
