"""Snakemake entry point: download every split file of a table data set, verified (plmscale.lockfile).

Checksums come from the config or, where the source publishes none, from the lock file (params.lock),
which the first download writes and every later one verifies.  The download.* settings are read from the
config here, not passed as params, so changing them reruns nothing.
"""

import json

from plmscale.atomic import write_json_atomic
from plmscale.download import DownloadSettings
from plmscale.locdata import TableDataset
from plmscale.lockfile import download_dataset
from plmscale.snake import logged

with logged(snakemake.log[0]):
    spec = TableDataset.from_config(snakemake.wildcards.dataset, json.loads(snakemake.params.spec))
    out_dir = str(snakemake.output[0]).rsplit("/", 1)[0]
    files = download_dataset(
        spec,
        out_dir,
        snakemake.params.lock,
        settings=DownloadSettings.from_config(snakemake.config.get("download")),
    )
    write_json_atomic(
        snakemake.output[0], {"dataset": spec.name, "lock": snakemake.params.lock, "files": files}
    )
