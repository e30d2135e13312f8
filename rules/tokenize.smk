# Sharded tokenization: one job per (split, source, shard), each a memory-mapped token store of a
# contiguous record range, read through the split FASTA's index (the job reads only its part).


rule tokenize_shard:
    input:
        fasta="results/split/{split}/{source}.fasta",
        index="results/split/{split}/{source}.fasta.index.json",
    output:
        ids="results/tokens/{split}/{source}/shard{shard}/ids.npy",
        offsets="results/tokens/{split}/{source}/shard{shard}/offsets.npy",
        manifest="results/tokens/{split}/{source}/shard{shard}/manifest.json",
    params:
        num_shards=config["tokenize"]["shards"],
        code=script_code("tokenize_shard"),
    log:
        "logs/tokenize/{split}/{source}/shard{shard}.log",
    script:
        "../scripts/tokenize_shard.py"
