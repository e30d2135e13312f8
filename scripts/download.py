"""Snakemake entry point: download a URL source, resumable and verified, manifest last (plmscale.download).

The download.* settings (retries, timeouts, stall detection, progress) are read from the config here, not
passed as rule params, so changing them reruns nothing.
"""

from plmscale.download import DownloadSettings, fetch
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    fetch(
        p.url, snakemake.output.fasta, sha256=p.sha256, md5=p.md5, size=p.size, metalink=p.metalink,
        release=p.release, manifest=snakemake.output.manifest,
        settings=DownloadSettings.from_config(snakemake.config.get("download")),
    )  # fmt: skip
