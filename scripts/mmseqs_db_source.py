"""Snakemake entry point: export a part of a verified MMseqs2 database archive to FASTA.

See plmscale.mmseqs_sources.  cluster.mmseqs and cluster.scratch are read from the config here, not params.
"""

from pathlib import Path

from plmscale.mmseqs import find_mmseqs
from plmscale.mmseqs_sources import mmseqs_db_source
from plmscale.snake import logged

with logged(snakemake.log[0]):
    p, cluster = snakemake.params, snakemake.config.get("cluster") or {}
    binary = find_mmseqs(cluster.get("mmseqs", "auto"))
    print(f"mmseqs {binary.version} from {binary.origin}: {binary.path}")
    mmseqs_db_source(
        snakemake.input.archive, snakemake.output.fasta, snakemake.output.report, binary=binary.path,
        db=p.db, subset=p.subset, clusters=p.clusters,
        scratch=cluster.get("scratch") or Path(snakemake.output.fasta).parent,
    )  # fmt: skip
