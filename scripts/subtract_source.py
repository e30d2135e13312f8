"""Snakemake entry point: one FASTA minus the keys of another source (plmscale.mmseqs_sources)."""

from pathlib import Path

from plmscale.atomic import write_json_atomic
from plmscale.mmseqs_sources import subtract_fasta
from plmscale.snake import logged

with logged(snakemake.log[0]):
    out = snakemake.output
    counts = subtract_fasta(
        snakemake.input.from_fasta, snakemake.input.minus_fasta, out.fasta,
        key_pattern=snakemake.params.key_pattern,
        scratch=(snakemake.config.get("cluster") or {}).get("scratch") or Path(out.fasta).parent,
    )  # fmt: skip
    write_json_atomic(out.report, {"key_pattern": snakemake.params.key_pattern, "counts": counts})
