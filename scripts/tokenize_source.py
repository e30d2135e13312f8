"""Snakemake entry point: tokenize every shard of one (split, source) FASTA (see plmscale.tokenize).

The body is guarded by ``__name__ == "__main__"``: the worker processes are spawned, and a spawned process
imports the main module (this file, as ``__mp_main__``) before it runs its shard.
"""

import json

from plmscale.snake import logged
from plmscale.tokenize import tokenize_source

if __name__ == "__main__":
    with logged(snakemake.log[0]):
        manifest = tokenize_source(
            snakemake.input.fasta,
            snakemake.output[0],
            num_shards=snakemake.params.num_shards,
            workers=snakemake.threads,
        )
        summary = {k: v for k, v in manifest.items() if k != "shards"}
        print(json.dumps(summary, indent=2))
        for shard in manifest["shards"]:
            print(f"{shard['dir']}: records {shard['records']}, {shard['num_tokens']:,} tokens")
