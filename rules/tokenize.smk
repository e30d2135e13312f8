# Sharded tokenization: one job per (split, source) writes that FASTA's shards, tokenize.threads shards at a
# time (plmscale.tokenize.tokenize_source), each a memory-mapped token store of a contiguous record range read
# through the split FASTA's index.  The directory is the job's output: a failed job leaves nothing, a rerun
# starts from an empty directory (no shards of two runs mixed).


rule tokenize:
    input:
        fasta="results/split/{split}/{source}.fasta",
        index="results/split/{split}/{source}.fasta.index.json",
    output:
        directory("results/tokens/{split}/{source}"),
    log:
        "logs/tokenize/{split}/{source}.log",
    conda:
        "../envs/python.yaml"
    threads: config["tokenize"]["threads"]
    resources:
        # a worker holds one chunk of ~4M residues (plmscale.tokenize.CHUNK_RESIDUES) at a time; sized by
        # the configured threads, not the job's (a local run with fewer --cores gives fewer, not more)
        mem_mb=1000 + 1000 * config["tokenize"]["threads"],
        runtime=lambda w: config["tokenize"]["runtime_per_shard"]
        * -(-SHARDS[w.split] // config["tokenize"]["threads"]),
    params:
        num_shards=lambda w: SHARDS[w.split],
        code=script_code("tokenize_source"),
    script:
        "../scripts/tokenize_source.py"
