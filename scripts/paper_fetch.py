"""Snakemake entry point: download the published logs file by file, sha256-checked (plmscale.paper_logs)."""

from pathlib import Path

from plmscale.paper_logs import fetch_logs
from plmscale.snake import logged

with logged(snakemake.log[0]):
    fetch_logs(
        snakemake.params.manifest, Path(snakemake.output[0]).parent, base_url=snakemake.params.base_url
    )
