"""Snakemake entry point: MMseqs2 clustering (see plmscale.mmseqs)."""

import json

from plmscale.mmseqs import ClusterSettings, cluster_stage, split_memory_limit
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p, cluster = snakemake.params, snakemake.config["cluster"]
    limit = cluster["split_memory_limit"]
    settings = ClusterSettings(
        method=p.method, min_seq_id=p.min_seq_id, coverage=p.coverage, cov_mode=p.cov_mode,
        threads=snakemake.threads, scratch=cluster["scratch"],
        split_memory_limit=split_memory_limit(snakemake.resources.mem_mb) if limit == "auto" else limit,
    )  # fmt: skip
    summary = cluster_stage(
        snakemake.input[0], snakemake.output.membership, snakemake.output.report, mmseqs=p.mmseqs,
        settings=settings,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
