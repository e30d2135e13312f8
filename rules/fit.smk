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
    params:
        approach1_bins=config["fit"]["approach1_bins"],
        approach2_exclude_edge=config["fit"]["approach2_exclude_edge"],
        approach3_grid=config["fit"]["approach3_grid"],
        huber_delta=config["fit"]["huber_delta"],
        n_bootstrap=config["fit"]["n_bootstrap"],
        seed=config["fit"]["seed"],
        code=script_code("fit"),
    log:
        "logs/fit/{objective}.log",
    script:
        "../scripts/fit.py"


rule summary:
    input:
        fits=expand("results/fits/{objective}.json", objective=STUDY.objectives),
        runs=expand("results/fits/{objective}_runs.parquet", objective=STUDY.objectives),
    output:
        "results/summary.json",
    params:
        code=script_code("summary"),
    log:
        "logs/fit/summary.log",
    script:
        "../scripts/summary.py"
