"""Snakemake entry point: download a URL source with checksum verification (see plmscale.download)."""

import json

from plmscale.download import download
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    print(json.dumps(download(p.url, snakemake.output[0], sha256=p.sha256, md5=p.md5)))
