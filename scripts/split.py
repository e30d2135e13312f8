"""Snakemake entry point: cluster-aware split, one indexed FASTA per (split, source) (see plmscale.split)."""

import json
from pathlib import Path

from plmscale.snake import logged
from plmscale.split import split_stage

with logged(snakemake.log[0]):
    p = snakemake.params
    fractions = {"train": p.train, "valid": p.valid, "test": p.test}
    out_fastas = {
        (Path(f).parent.name, Path(f).name.removesuffix(".fasta")): f for f in snakemake.output.fastas
    }
    result = split_stage(
        snakemake.input.fasta, snakemake.input.membership, out_fastas, snakemake.output.assignments,
        snakemake.output.summary, fractions={k: v for k, v in fractions.items() if v > 0}, seed=p.seed,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
