"""Snakemake entry point: copy a local FASTA source verified, its sha256 recorded (see plmscale.sources)."""

from plmscale.snake import logged
from plmscale.sources import copy_local_fasta

with logged(snakemake.log[0]):
    p = snakemake.params
    info = copy_local_fasta(
        snakemake.input[0], snakemake.output.fasta, snakemake.output.manifest, key=p.key, sha256=p.sha256
    )
    checked = "checked against the config" if info["sha256_checked"] else "recorded (no sha256 in the config)"
    kind = "gzipped" if info["gzip"] else "plain"
    print(f"{p.key}: copied {info['path']} ({info['bytes']:,} bytes, {kind} FASTA)")
    print(f"{p.key}: sha256 {info['sha256']} {checked}")
