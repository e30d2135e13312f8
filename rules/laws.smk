# Laws fitted to the study's own transfer runs and data-repetition runs (grid.transfer, grid.repetition).


TRANSFER_POINTS = STUDY.transfer_points()


rule transfer_law:
    input:
        done=[run_file(p, "done.json") for p in TRANSFER_POINTS],
        metrics=[run_file(p, "metrics.parquet") for p in TRANSFER_POINTS],
        scratch_done=[run_file(scratch_of(p), "done.json") for p in TRANSFER_POINTS],
        scratch_metrics=[run_file(scratch_of(p), "metrics.parquet") for p in TRANSFER_POINTS],
    output:
        json="results/fits/transfer_law.json",
        csv="results/fits/transfer_points.csv",
        png=report(
            "results/figures/transfer_law.png",
            caption="report/transfer_law.rst",
            category="Scaling laws",
            labels={"objective": "both", "figure": "transfer law"},
        ),
        svg="results/figures/transfer_law.svg",
        facts="results/figures/transfer_law.json",
    log:
        "logs/fit/transfer_law.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        n_points=config["fit"]["transfer_points"],
        dpi=config["plots"]["dpi"],
        code=script_code("transfer_law"),
    script:
        "../scripts/transfer_law.py"


rule repetition_law:
    input:
        done=lambda w: [run_file(p, "done.json") for p in repetition_runs(w.objective)],
        metrics=lambda w: [run_file(p, "metrics.parquet") for p in repetition_runs(w.objective)],
        evals=lambda w: [eval_file(p) for p in repetition_runs(w.objective)],
        fit="results/fits/{objective}.json",
    output:
        json="results/fits/{objective}_repetition.json",
        png=report(
            "results/figures/{objective}_repetition.png",
            caption="report/repetition.rst",
            category="Scaling laws",
            subcategory="{objective}",
            labels={"objective": "{objective}", "figure": "repetition"},
        ),
        svg="results/figures/{objective}_repetition.svg",
        facts="results/figures/{objective}_repetition.json",
    log:
        "logs/fit/{objective}_repetition.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        dpi=config["plots"]["dpi"],
        code=script_code("repetition_law"),
    script:
        "../scripts/repetition_law.py"
