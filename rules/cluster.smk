# MMseqs2 clustering of all validated sequences and the cluster-aware split.


rule pool:
    input:
        expand("results/validate/{source}.fasta", source=SOURCES),
    output:
        "results/cluster/all.fasta",
    params:
        sources=SOURCES,
        code=script_code("pool"),
    log:
        "logs/cluster/pool.log",
    script:
        "../scripts/pool.py"


rule cluster:
    input:
        "results/cluster/all.fasta",
    output:
        table="results/cluster/clusters.tsv",
        report="results/cluster/cluster.json",
    params:
        mmseqs=config["cluster"]["mmseqs"],
        method=config["cluster"]["method"],
        min_seq_id=config["cluster"]["min_seq_id"],
        coverage=config["cluster"]["coverage"],
        cov_mode=config["cluster"]["cov_mode"],
        code=script_code("cluster"),
    threads: config["cluster"]["threads"]
    log:
        "logs/cluster/cluster.log",
    script:
        "../scripts/cluster.py"


rule split:
    input:
        fasta="results/cluster/all.fasta",
        clusters="results/cluster/clusters.tsv",
    output:
        fastas=expand("results/split/{split}.fasta", split=ACTIVE_SPLITS),
        assignments="results/split/assignments.tsv",
        summary="results/split/summary.json",
    params:
        seed=config["split"]["seed"],
        train=config["split"]["fractions"].get("train", 0.0),
        valid=config["split"]["fractions"].get("valid", 0.0),
        test=config["split"]["fractions"].get("test", 0.0),
        code=script_code("split"),
    log:
        "logs/split/split.log",
    script:
        "../scripts/split.py"
