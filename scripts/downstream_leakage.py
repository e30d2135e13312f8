"""Snakemake entry point: evaluation proteins sharing an MMseqs2 cluster with pre-training proteins
(plmscale.leakage), clustered with the study's cluster settings and this job's threads and memory."""

import json

from plmscale.leakage import leakage_report
from plmscale.mmseqs import ClusterSettings, split_memory_limit
from plmscale.snake import logged

with logged(snakemake.log[0]):
    cfg = json.loads(snakemake.params.cluster)
    execution = snakemake.config["cluster"]
    limit = execution.get("split_memory_limit", "auto")
    settings = ClusterSettings(
        method=cfg.get("method", "linclust"),
        min_seq_id=cfg["min_seq_id"],
        coverage=cfg["coverage"],
        cov_mode=cfg.get("cov_mode", 1),
        threads=snakemake.threads,
        split_memory_limit=split_memory_limit(snakemake.resources.mem_mb)
        if limit == "auto"
        else (limit or ""),
        scratch=execution.get("scratch"),
    )
    leakage_report(
        snakemake.input.data,
        list(snakemake.input.pretrain),
        snakemake.output[0],
        mmseqs=cfg.get("mmseqs"),
        settings=settings,
    )
