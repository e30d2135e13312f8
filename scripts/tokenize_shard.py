"""Snakemake entry point: tokenize one shard of one (split, source) FASTA (see plmscale.tokenize)."""

import json
from pathlib import Path

from plmscale.snake import logged
from plmscale.tokenize import tokenize_shard

with logged(snakemake.log[0]):
    manifest = tokenize_shard(
        snakemake.input.fasta,
        Path(snakemake.output.manifest).parent,
        shard_index=int(snakemake.wildcards.shard),
        num_shards=snakemake.params.num_shards,
    )
    print(json.dumps(manifest, indent=2))
