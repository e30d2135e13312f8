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
    log:
        "logs/tokenize/{split}/{source}/shard{shard}.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        num_shards=lambda w: SHARDS[w.split],
        code=script_code("tokenize_shard"),
    script:
        "../scripts/tokenize_shard.py"


localrules:
    tokens_ready,


rule tokens_ready:
    # one file standing for all of a split's shards (plmscale.tokenize.write_ready): every training and
    # evaluation job depends on it alone; a local rule (it reads the manifests and writes one small file)
    input:
        lambda w: token_manifests(w.split),
    output:
        "results/tokens/{split}/ready.json",
    log:
        "logs/tokenize/{split}/ready.log",
    params:
        code=code_digest("tokenize"),
    run:
        from plmscale.tokenize import write_ready

        Path(log[0]).write_text(write_ready(list(input), output[0]) + "\n")
