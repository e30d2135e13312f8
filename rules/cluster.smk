# MMseqs2 clustering of all validated sequences and the cluster-aware split, in bounded memory.


rule pool:
    input:
        expand("results/validate/{source}.fasta", source=SOURCES),
    output:
        "results/cluster/all.fasta",
    log:
        "logs/cluster/pool.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        sources=SOURCES,
        code=script_code("pool"),
    script:
        "../scripts/pool.py"


rule cluster:
    # createdb + linclust (or cluster) + createtsv on a scratch disk, membership joined in polars -> Parquet
    input:
        "results/cluster/all.fasta",
    output:
        membership="results/cluster/membership.parquet",
        report="results/cluster/cluster.json",
    log:
        "logs/cluster/cluster.log",
    conda:
        "../envs/mmseqs2.yaml"
    threads: config["cluster"]["threads"]
    resources:
        mem_mb=lambda w, attempt: config["cluster"]["mem_mb"] * attempt,
        runtime=720,
    params:
        mmseqs=config["cluster"]["mmseqs"],
        method=config["cluster"]["method"],
        min_seq_id=config["cluster"]["min_seq_id"],
        coverage=config["cluster"]["coverage"],
        cov_mode=config["cluster"]["cov_mode"],
        code=script_code("cluster"),
    # cluster.split_memory_limit and cluster.scratch are read by the script from the config (how the job
    # runs, not what it computes: changing them reruns nothing)
    script:
        "../scripts/cluster.py"


rule split:
    # a streamed merge of the pooled FASTA with the membership: one indexed FASTA per (split, source)
    input:
        fasta="results/cluster/all.fasta",
        membership="results/cluster/membership.parquet",
    output:
        fastas=expand("results/split/{split}/{source}.fasta", split=ACTIVE_SPLITS, source=SOURCES),
        indexes=expand("results/split/{split}/{source}.fasta.index.json", split=ACTIVE_SPLITS, source=SOURCES),
        assignments="results/split/assignments.parquet",
        summary="results/split/summary.json",
    log:
        "logs/split/split.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        seed=config["split"]["seed"],
        train=config["split"]["fractions"].get("train", 0.0),
        valid=config["split"]["fractions"].get("valid", 0.0),
        test=config["split"]["fractions"].get("test", 0.0),
        code=script_code("split"),
    script:
        "../scripts/split.py"
