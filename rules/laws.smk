# Laws fitted to the study's own transfer runs and data-repetition runs (grid.transfer, grid.repetition).


def scratch_of(point):
    """The from-scratch IsoFLOP run a transfer or repetition run is compared with (same objective, budget,
    shape; replicate 0)."""
    return STUDY.make_point(point.objective, point.flops, point.shape_name)


TRANSFER_POINTS = STUDY.transfer_points()


def repetition_runs(objective):
    """An objective's repetition runs and their uncapped references, each once."""
    runs = [p for p in STUDY.repetition_points() if p.objective == objective]
    references = {scratch_of(p).run_id: scratch_of(p) for p in runs}
    return runs + list(references.values())


def law_outputs():
    out = []
    if TRANSFER_POINTS:
        out += ["results/fits/transfer_law.json", "results/figures/transfer_law.png"]
    for objective in sorted({p.objective for p in STUDY.repetition_points()}):
        out += [f"results/fits/{objective}_repetition.json", f"results/figures/{objective}_repetition.png"]
    return out


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
    params:
        n_points=config["fit"]["transfer_points"],
        dpi=config["plots"]["dpi"],
        code=script_code("transfer_law"),
    log:
        "logs/fit/transfer_law.log",
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
    params:
        dpi=config["plots"]["dpi"],
        code=script_code("repetition_law"),
    log:
        "logs/fit/{objective}_repetition.log",
    script:
        "../scripts/repetition_law.py"
