# Sharded tokenization: one job per (split, shard), each a memory-mapped token store.


rule tokenize_shard:
    input:
        "results/split/{split}.fasta",
    output:
        ids="results/tokens/{split}/shard{shard}/ids.npy",
        offsets="results/tokens/{split}/shard{shard}/offsets.npy",
        manifest="results/tokens/{split}/shard{shard}/manifest.json",
    params:
        num_shards=config["tokenize"]["shards"],
        code=script_code("tokenize_shard"),
    log:
        "logs/tokenize/{split}/shard{shard}.log",
    script:
        "../scripts/tokenize_shard.py"
