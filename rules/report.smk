# The report's landing page ("0. Summary": headline, runs, fits, downstream) and the generated part of each
# figure's caption (rules/report/<figure>.rst includes results/report/captions/<objective>_<figure>.rst);
# rules/report/workflow.rst includes the headline (results/report/headline.rst) on the report's front page.


rule report_landing:
    input:
        fits=expand("results/fits/{objective}.json", objective=STUDY.objectives),
        # every run the tables list, and the figures' facts the captions quote: the landing reads only its
        # inputs, so what it says never depends on the order jobs ran in
        dones=[run_file(p, "done.json") for p in POINTS],
        evals=[eval_file(p) for p in POINTS],
        facts=[f"results/figures/{o}_{fig}.json" for o in STUDY.objectives for fig in FIGURES],
        downstream=["results/downstream/results.csv"] if downstream_enabled() else [],
    output:
        html=report("results/report/landing.html", caption="report/landing.rst", category="0. Summary"),
        headline="results/report/headline.rst",
        runs_csv="results/report/runs.csv",
        runs_md="results/report/runs.md",
        fits_csv="results/report/fits.csv",
        fits_md="results/report/fits.md",
        captions=[f"results/report/captions/{o}_{fig}.rst" for o in STUDY.objectives for fig in FIGURES],
    log:
        "logs/report/landing.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        run_ids=[p.run_id for p in POINTS],
        budgets=[flops for flops, _ in STUDY.budgets],
        code=script_code("report_landing"),
    script:
        "../scripts/report_landing.py"


rule paper_report_landing:
    # the paper report's summary page, and the generated part of every paper figure's caption (from the
    # fits and the figures' facts files: rules/report/paper_<figure>.rst includes it)
    input:
        fits=expand("results/paper/fits/{objective}.json", objective=PAPER_OBJECTIVES),
        coefficients="results/paper/coefficients.md",
        method_steps="results/paper/method_steps.md",
        facts=paper_figure_facts(),
    output:
        html=report(
            "results/paper/report/landing.html",
            caption="report/paper_landing.rst",
            category="0. Paper summary",
        ),
        headline="results/paper/report/headline.rst",
        captions=[f"results/paper/report/captions/paper_{fig}.rst" for fig in PAPER_CAPTIONED],
    log:
        "logs/paper/report_landing.log",
    conda:
        "../envs/python.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=script_code("report_paper"),
    script:
        "../scripts/report_paper.py"


rule paper_report:
    # `snakemake --report results/paper/report.html paper_report` (make report-paper)
    input:
        rules.paper_figures.input,
        "results/paper/report/landing.html",
