# Scaling-law fits per objective: run table, learning curves and Approaches 1, 2, 3.


rule fit:
    input:
        evals=lambda w: [eval_file(p) for p in points_of(w.objective)],
        dones=lambda w: [run_file(p, "done.json") for p in points_of(w.objective)],
        metrics=lambda w: [run_file(p, "metrics.parquet") for p in points_of(w.objective)],
    output:
        runs="results/fits/{objective}_runs.parquet",
        curves="results/fits/{objective}_curves.parquet",
        fits="results/fits/{objective}.json",
    log:
        "logs/fit/{objective}.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        approach1_bins=config["fit"]["approach1_bins"],
        approach2_exclude_edge=config["fit"]["approach2_exclude_edge"],
        approach3_grid=config["fit"]["approach3_grid"],
        huber_delta=config["fit"]["huber_delta"],
        n_bootstrap=config["fit"]["n_bootstrap"],
        seed=config["fit"]["seed"],
        code=script_code("fit"),
    script:
        "../scripts/fit.py"


rule summary:
    input:
        fits=expand("results/fits/{objective}.json", objective=STUDY.objectives),
        runs=expand("results/fits/{objective}_runs.parquet", objective=STUDY.objectives),
    output:
        "results/summary.json",
    log:
        "logs/fit/summary.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=script_code("summary"),
    script:
        "../scripts/summary.py"
