"""Snakemake entry point: MMseqs2 clustering (see plmscale.mmseqs)."""

import json

from plmscale.mmseqs import cluster_stage
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    summary = cluster_stage(
        snakemake.input[0], snakemake.output.table, snakemake.output.report, mmseqs=p.mmseqs,
        method=p.method, min_seq_id=p.min_seq_id, coverage=p.coverage, cov_mode=p.cov_mode,
        threads=snakemake.threads,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
